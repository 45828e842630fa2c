"""`Plan → str` renderers: text (terminal), json (machines, versioned schema). No I/O here."""
