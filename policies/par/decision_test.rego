package par.decision_test

import rego.v1

import data.par.testlib as t

test_allow_has_reasons_rule_ids_and_timeout if {
	d := data.par.decision with input as t.sre("restart_transaction_service", [])
	d.allow == true
	d.rule_ids == ["authz.role.sre"]
	count(d.reasons) == 1
	d.limits == {"timeout_s": 120}
}

test_timeout_defaults_from_data if {
	inp := object.union(t.sre("restart_pix_worker", []), {"action_info": object.union(t.info.restart_pix_worker, {"timeout_s": null})})
	d := data.par.decision with input as inp
	d.limits.timeout_s == data.dogbank.default_timeout_s
}

test_deny_lists_every_rule_that_denied if {
	h := [t.ran("scale_pix_worker_3", 10, "pix-worker")]
	d := data.par.decision with input as t.doc("scale_pix_worker_3", t.user(["developer"]), t.manual, h)
	not d.allow
	t.names_rule(d, "authz.role")
	t.names_rule(d, "rate_limit.scale_interval")
}

test_every_deny_reason_names_a_rule_it_lists if {
	h := [t.ran("scale_pix_worker_3", a, "pix-worker") | some a in [10, 100, 200, 300]]
	d := data.par.decision with input as t.doc("scale_pix_worker_5", t.user(["developer"]), t.manual, h)
	not d.allow
	every r in d.reasons {
		some id in d.rule_ids
		startswith(r, sprintf("%s:", [id]))
	}
}

test_missing_history_is_denied if {
	inp := object.remove(t.sre("restart_pix_worker", []), ["history"])
	d := data.par.decision with input as inp
	not d.allow
	t.names_rule(d, "input")
}

test_missing_now_is_denied if {
	inp := object.remove(t.sre("restart_pix_worker", []), ["now_ns"])
	d := data.par.decision with input as inp
	not d.allow
}

test_empty_input_is_denied if {
	d := data.par.decision with input as {}
	not d.allow
	count(d.reasons) > 0
}

test_decision_is_defined_without_input if {
	not data.par.decision.allow
}

# data.par.allow (the verdict alone) must agree with the decision, which repeats its conditions inline.
allow_agreement_cases := {
	"allowed": t.sre("restart_transaction_service", []),
	"denied by authz": t.doc("restart_pix_worker", t.user(["developer"]), t.manual, []),
	"denied by a rate limit": t.doc("scale_pix_worker_3", t.workflow(t.scale_wf), t.monitor(t.lag_monitor), [t.ran("scale_pix_worker_3", 10, "pix-worker")]),
	"malformed input": object.remove(t.sre("restart_pix_worker", []), ["trigger"]),
}

test_allow_rule_agrees_with_decision[note] if {
	some note, inp in allow_agreement_cases
	d := data.par.decision with input as inp
	a := data.par.allow with input as inp
	a == d.allow
}
