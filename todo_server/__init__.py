"""todo-server: a small, fast, secure REST service for personal task lists."""
