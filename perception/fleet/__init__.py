"""Fleet evaluation: many drives replayed through the pipeline's logic in-process (no
sockets) as Ray tasks, scored one by one and pooled (``perception fleet``). ``job`` is what
one task does and may import anything below the CLI; ``run`` holds the Ray side (imported
only when a fleet runs), the result cache and the report that pools the drives' scores."""
