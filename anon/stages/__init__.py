"""Pipeline stages (fakes, invert, pair, anonymize, evaluate): each caches its result in a folder
named by a hash of the config values that produce it, and skips work already there."""
