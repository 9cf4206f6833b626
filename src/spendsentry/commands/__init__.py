"""Sub-commands of the ``spendsentry`` CLI, one module each."""
