"""Segmenter node: frames.rect -> detections, fast or accurate model chosen per frame."""

from perception.node.loop import NodeContext, node_main
from perception.segmentation.segmenter_logic import SegmenterConfig, SegmenterLogic, build_segmenter


def _make(cfg: SegmenterConfig, ctx: NodeContext) -> SegmenterLogic:
    return build_segmenter(cfg, ctx.deterministic)


def main() -> None:
    node_main("segmenter", _make, SegmenterConfig, with_context=True)


if __name__ == "__main__":
    main()
