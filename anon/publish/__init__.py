"""Closed-loop anonymisation: verify every image, re-optimise the ones that fail, publish only what passed.

* :mod:`anon.publish.ladder`: the escalation ladder (a Hydra list) and the per-item decision;
* :mod:`anon.publish.attempts`: one attempt = a re-optimisation of some items under a setting, then
  their verification under the deciding evaluators;
* :mod:`anon.publish.release`: atomic copies into the published folder, mask / blur fallbacks;
* :mod:`anon.publish.summary`: the run summary for a data-protection officer (summary.md / .json);
* :mod:`anon.publish.stage`: the loop, resumable from its attempt records, and ``anon publish``.
"""
