"""The `pii` eval suite: how much of the PII in shoppers' messages the PII guard finds, next to
stock Presidio.

Where things are: `suite` (the kind and its rows), `datasets` (labeled messages, CoNLL posts,
known values), `systems` (the guard and stock Presidio), `scoring` (the matching rule).
"""
