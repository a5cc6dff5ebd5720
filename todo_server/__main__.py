"""``python -m todo_server`` runs the ``todo-server`` command."""

import sys

from todo_server.cli import main

sys.exit(main())
