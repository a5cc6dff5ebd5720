#!/bin/sh
# The image's entrypoint: the todo-server command, `serve` by default.
#   serve                     migrate first when MIGRATE_ON_START=1, then serve
#   migrate [up|status|verify|sql] [--json], purge, ready, version: as todo-server
set -e
[ "$#" -gt 0 ] || set -- serve
if [ "$1" = serve ] && [ "${MIGRATE_ON_START:-0}" = 1 ]; then
  todo-server migrate
fi
exec todo-server "$@"
