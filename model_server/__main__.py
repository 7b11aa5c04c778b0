"""Entry point for `python -m model_server`."""

import sys

from model_server.cli import main

sys.exit(main())
