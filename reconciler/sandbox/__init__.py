"""Local sandbox pieces, above the core (which never imports them): the embedded PostgreSQL and its
lifecycle (`postgres`), a stateful Stripe emulator the real `stripe` SDK can talk to (`emulator`), the
sandbox a command runs against (`session`), and `sandbox checkout`, the guide's test end to end
(`checkout`)."""
