# The task-admission decision (data.par.decision), combining allowlist, authz and rate limits.
# Allow only if something granted the task and nothing denied it; a deny lists every rule that
# denied it, each reason starting with the rule id. Input: docs/policy-input.md.
package par

import rego.v1


default allow := false

allow if {
	data.par.well_formed
	count(data.par.authz.grants) > 0
	count(data.par.allowlist.deny) == 0
	count(data.par.ratelimit.deny) == 0
}

# Only evaluated on the deny path: the allow path never needs the explanations.
denials := ((data.par.allowlist.deny | data.par.authz.deny) | data.par.ratelimit.deny) | input_denials

# Defence in depth: the runner validates the input against a schema, but a policy must never allow
# because a field it depends on was missing and a rule silently did not fire.
input_denials contains {"rule": "input", "reason": "input: history, now_ns, principal and trigger are required"} if {
	not well_formed
}

well_formed if {
	is_array(input.history)
	is_number(input.now_ns)
	is_object(input.principal)
	is_object(input.trigger)
}

timeout_s := input.action_info.timeout_s if {
	is_number(input.action_info.timeout_s)
} else := data.dogbank.default_timeout_s

# The allow branch repeats allow's conditions instead of referencing it, and each branch binds the
# rule sets it reports once (a rule reference costs more than these checks in the interpreter);
# `else` keeps the deny branch, and the denial explanations, off the allow path. Comprehension terms are
# plain variables (`r := g.reason`), as the compiled-mode lint requires (docs/policy-input.md).
decision := {
	"allow": true,
	"reasons": [r | some g in sort(granted); r := g.reason],
	"rule_ids": sort({r | some g in granted; r := g.rule}),
	"limits": {"timeout_s": data.par.timeout_s},
} if {
	is_array(input.history)
	is_number(input.now_ns)
	is_object(input.principal)
	is_object(input.trigger)
	granted := data.par.authz.grants
	count(granted) > 0
	count(data.par.allowlist.deny) == 0
	count(data.par.ratelimit.deny) == 0
} else := {
	"allow": false,
	"reasons": [r | some d in sort(found); r := d.reason],
	"rule_ids": sort({r | some d in found; r := d.rule}),
	"limits": {"timeout_s": data.par.timeout_s},
} if {
	found := data.par.denials
}
