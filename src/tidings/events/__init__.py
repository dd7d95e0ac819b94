"""The canonical event model: CloudEvents 1.0 envelope plus a typed ``data`` per type."""
