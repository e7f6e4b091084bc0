"""The `bandit-sim` eval suite: offer bandits on a seeded simulation of people with hidden tastes.

Where things are: `world` (people, offers and clicks), `learners` (the policies), `regret` (a run
and its expected regret), `suite` (the kind and its report).
"""
