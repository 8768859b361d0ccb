"""One job: its config checked once, its memory estimated, its Lightning callbacks (see ``train``)."""
