"""``perception train --card models/<name>.toml [--data SPEC,...] [--init PATH]``: train or fine-tune
a model from its card."""

from __future__ import annotations

import argparse
import json


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The card, how the run starts (fresh, ``--resume``, ``--continue``), the objects to
    copy-paste, where checkpoints go, the progress bar."""
    p.add_argument("--card", required=True, help="model card TOML (models/<name>.toml)")
    p.add_argument("--steps", type=int, default=None, help="override [training] steps (tiny runs)")
    p.add_argument("--resume", action="store_true", help="continue from <run_dir>/<name>/last.pt")
    p.add_argument(
        "--continue",
        action="store_true",
        dest="continue_from_card",
        help="start a new schedule from the card's own weights file (e.g. on a new machine, "
        "where the run folder's checkpoints are not); the saved weights count both runs' steps",
    )
    p.add_argument(
        "--coco-root",
        default=None,
        help="COCO-format dataset (annotations/instances_*.json + images) to copy-paste objects from",
    )
    p.add_argument("--run-dir", default=None, help="checkpoint folder (default: [training] run_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_budget_arguments(p: argparse.ArgumentParser) -> None:
    """How long it trains (CPU minutes, with snapshots) and on how many threads and workers."""
    p.add_argument(
        "--cpu-minutes",
        type=float,
        default=None,
        help="train for this much CPU time of this process instead of [training] steps (learning curves)",
    )
    p.add_argument(
        "--snapshot-minutes",
        type=float,
        nargs="*",
        default=[],
        help="with --cpu-minutes: also save the weights at these CPU-minutes (<run_dir>/<name>/snapshots/)",
    )
    p.add_argument("--threads", type=int, default=None, help="override [training] threads")
    p.add_argument("--workers", type=int, default=None, help="override [training] workers (data loader processes)")


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """What it trains and validates on."""
    p.add_argument(
        "--data",
        default=None,
        metavar="SPEC[,SPEC...]",
        help="train on these sources instead of the card's [data]: synth, yolo-seg:DIR, coco:FILE.json, "
        "drive:FILE.mcap, each optionally @WEIGHT for the mix (e.g. synth@3,yolo-seg:data/robot@1)",
    )
    p.add_argument(
        "--val",
        default=None,
        metavar="SPEC[,SPEC...]",
        help="validate (and keep the best weights) on these sets instead of held-out parts of the training "
        "sources, e.g. yolo-seg:../shared/data/cityscapes/val,synth (synth: the synthetic held-out drives)",
    )
    p.add_argument(
        "--images",
        default=None,
        metavar="DIR",
        help="folder the COCO JSON's file_name entries are relative to (default: the JSON's folder)",
    )


def _add_fine_tuning_arguments(p: argparse.ArgumentParser) -> None:
    """Starting weights, frozen trunk, learning rate and early stop (fine-tuning)."""
    p.add_argument(
        "--init",
        default=None,
        metavar="PATH",
        help="start from this weights file: a perception .pt or a torchvision checkpoint (a state_dict, "
        "e.g. maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth; its COCO class head cut to the card's classes)",
    )
    p.add_argument("--freeze-trunk", action="store_true", help="fine-tune with the trunk (backbone) frozen")
    p.add_argument("--lr", type=float, default=None, help="override [training] lr (fine-tuning: a lower rate)")
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many evaluations (every [training] eval_every steps) without a better held-out mask AP",
    )
    p.add_argument("--eval-every", type=int, default=None, help="override [training] eval_every (steps)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``perception train``, in the order ``--help`` lists them."""
    _add_run_arguments(p)
    _add_budget_arguments(p)
    _add_data_arguments(p)
    _add_fine_tuning_arguments(p)


def run(args: argparse.Namespace) -> int:
    from perception.train.loop import train  # torch only here

    settings = {
        "threads": args.threads,
        "workers": args.workers,
        "lr": args.lr,
        "patience": args.patience,
        "eval_every": args.eval_every,
        "freeze_trunk": args.freeze_trunk or None,
    }
    result = train(
        args.card,
        steps=args.steps,
        resume=args.resume,
        coco_root=args.coco_root,
        run_dir=args.run_dir,
        progress=not args.no_progress,
        continue_from_card=args.continue_from_card,
        cpu_minutes=args.cpu_minutes,
        snapshot_minutes=tuple(args.snapshot_minutes),
        settings={k: v for k, v in settings.items() if v is not None},
        data=args.data,
        images_dir=args.images,
        init=args.init,
        val=args.val,
    )
    print(json.dumps(result, indent=2))
    return 0
