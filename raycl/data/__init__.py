"""Data: turning text and conversations into token blocks and held-out examples."""
