"""Jobs across a fleet (the AWS IoT Jobs model): targets, rollout, abort rules, timeouts."""
