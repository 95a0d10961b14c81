"""The HTTP service: one-off payments and account set-up for AgentView, selfcare apps and IVR (REST + SOAP)."""
