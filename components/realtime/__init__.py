"""Real time (REALTIME.md): event intake, the durable event log, the online store and fresh answers."""
