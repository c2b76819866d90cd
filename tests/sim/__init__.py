"""A deterministic simulation of the money path, in the spirit of TigerBeetle's VOPR: one seed
drives containers, requests, upstreams, money in, sweeps, crashes and the store's faults, and
the money rules are checked after every step (see simulation.py; run `make sim`)."""
