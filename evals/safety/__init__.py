"""The `safety` eval suite: adversarial attacks through the whole service (POST /v1/chat streamed,
POST /v1/decide with the LLM writer, and cross-user API calls), counting PII leaks and policy
bypasses.

Where things are:
  * `attacks` - the attack corpus (`evals/data/safety_attacks.jsonl`), the demo world it names,
    and rendering an attack's inputs;
  * `adversary` - the scripted model that complies with every attack;
  * `exchanges` - one attack through the service and the log records it left;
  * `leaks` - the raw PII values searched for, and where they are found;
  * `bypasses` - the policy check of a final answer;
  * `verdicts` - what is counted per attack;
  * `suite` - the suite kind (`@register("safety")`): the run and its report.
"""
