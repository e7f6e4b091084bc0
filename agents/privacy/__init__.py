"""A person's rights over their data (export, erasure), minimized storage and retention."""
