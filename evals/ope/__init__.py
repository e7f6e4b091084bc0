"""Off-policy evaluation: the value of a target policy from bandit logs another policy made.

Where things are:
  * `data` - `OPEData`, the logged rounds and the target policy's action distribution;
  * `estimators` - IPS, SNIPS, DM, DR, SNDR, Switch-DR, DRos, SLOPE and the bootstrap;
  * `reward_model` - the reward model of the direct and doubly robust estimators;
  * `obd` - the Open Bandit Dataset's logs and its production BTS policy;
  * `suite`, `params`, `report` - the `ope-obd` suite kind, its parameters and its report.
"""
