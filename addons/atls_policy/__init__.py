"""mitmproxy addon: recognise ATLS flows and apply a policy."""
