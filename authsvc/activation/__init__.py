"""Account activation: activation letters and, later, the activation flow."""
