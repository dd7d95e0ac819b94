"""Payment gateways: one adapter per gateway behind one interface (base.py)."""
