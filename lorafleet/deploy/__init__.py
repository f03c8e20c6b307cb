"""The deploy: one module per step (lorafleet/deploy/<step>/), reading what it ships from files/ and templates/ through layout."""
