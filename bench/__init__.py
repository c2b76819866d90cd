"""`make bench`: what the gateway costs a request, a cold start and a busy wallet."""
