"""Local sandbox pieces: a stateful Stripe emulator the real `stripe` SDK can talk to."""
