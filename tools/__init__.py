"""Development tools of gearman-proto (not installed): ``python -m tools.gen_docs``."""
