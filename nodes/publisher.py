"""Publisher node: republishes chosen topics on the external endpoint."""

from perception.system.node_table import run_node

if __name__ == "__main__":
    run_node("publisher")
