"""Generated from protos/a2c/v1/*.proto by tools/gen_protos.py: do not edit."""
