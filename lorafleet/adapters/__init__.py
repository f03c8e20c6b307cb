"""What an adapter is, on the laptop and in containers alike: its entry in the settings (declared),
its folder as uploaded (folder) and the check that vLLM can serve it (check, also shipped to the host)."""
