package par.ratelimit_test

import rego.v1

import data.par.testlib as t

# Every limit is tested exactly at the limit, one over, and just after the window; the reason must
# say when the next attempt is allowed.

next_at(ns) := sprintf("next attempt allowed at %s", [time.format(ns)])

has_reason(d, text) if {
	some r in d.reasons
	contains(r, text)
}

# --- scaling: at most 4 in any 30 minutes --------------------------------------------------------

scales(agos) := [t.ran("scale_pix_worker_3", a, "pix-worker") | some a in agos]

test_scale_three_in_window_allows_a_fourth if {
	d := data.par.decision with input as t.sre("scale_pix_worker_5", scales([100, 500, 900]))
	d.allow
}

test_scale_at_the_limit_is_denied if {
	d := data.par.decision with input as t.sre("scale_pix_worker_5", scales([100, 500, 900, 1799]))
	not d.allow
	t.names_rule(d, "rate_limit.scale_count")
	has_reason(d, next_at(t.now + t.sec))
	has_reason(d, "(in 1 s)")
}

test_scale_one_over_the_limit_is_denied if {
	d := data.par.decision with input as t.sre("scale_pix_worker_5", scales([100, 500, 900, 1200, 1700]))
	not d.allow
	t.names_rule(d, "rate_limit.scale_count")
	# Two must leave the window: the second oldest (1200 s ago) leaves at +600 s.
	has_reason(d, next_at(t.now + (600 * t.sec)))
}

test_scale_entry_exactly_one_window_ago_no_longer_counts if {
	d := data.par.decision with input as t.sre("scale_pix_worker_5", scales([100, 500, 900, 1800]))
	d.allow
}

test_scale_failed_runs_count_too if {
	h := [
		t.ran_with("scale_pix_worker_3", 100, "pix-worker", "failure"),
		t.ran_with("scale_pix_worker_5", 500, "pix-worker", "timeout"),
		t.ran_with("scale_pix_worker_1", 900, "pix-worker", "interrupted"),
		t.ran_with("scale_pix_worker_3", 1000, "pix-worker", "started"),
	]
	d := data.par.decision with input as t.sre("scale_pix_worker_5", h)
	t.names_rule(d, "rate_limit.scale_count")
}

test_scale_limit_comes_from_data if {
	d := data.par.decision with input as t.sre("scale_pix_worker_5", scales([100, 500]))
		with data.dogbank.rate_limits.scale.max as 2
	t.names_rule(d, "rate_limit.scale_count")
}

test_scale_limit_ignores_restarts if {
	h := [t.ran("restart_pix_worker", a, "pix-worker") | some a in [10, 100, 200, 300, 400]]
	d := data.par.decision with input as t.sre("scale_pix_worker_5", h)
	not "rate_limit.scale_count" in d.rule_ids
	not "rate_limit.scale_interval" in d.rule_ids
}

# --- scaling: none within 60 s of the previous one -----------------------------------------------

test_scale_interval_59s_is_denied if {
	d := data.par.decision with input as t.sre("scale_pix_worker_1", scales([59]))
	not d.allow
	t.names_rule(d, "rate_limit.scale_interval")
	has_reason(d, next_at(t.now + t.sec))
}

test_scale_interval_exactly_60s_is_allowed if {
	d := data.par.decision with input as t.sre("scale_pix_worker_1", scales([60]))
	d.allow
}

test_scale_interval_uses_the_latest_run if {
	d := data.par.decision with input as t.sre("scale_pix_worker_1", scales([30, 10, 400]))
	has_reason(d, next_at(t.now + (50 * t.sec)))
}

test_scale_interval_applies_to_workflows if {
	inp := t.doc("scale_pix_worker_5", t.workflow(t.scale_wf), t.monitor(t.lag_monitor), scales([5]))
	d := data.par.decision with input as inp
	not d.allow
	t.names_rule(d, "rate_limit.scale_interval")
}

# --- restarts: at most 3 of the same service in 15 minutes ---------------------------------------

tx_restarts(agos) := [t.ran("restart_transaction_service", a, "transaction-service") | some a in agos]

test_restart_two_in_window_allows_a_third if {
	d := data.par.decision with input as t.sre("restart_transaction_service", tx_restarts([10, 300]))
	d.allow
}

test_restart_at_the_limit_is_denied if {
	d := data.par.decision with input as t.sre("restart_transaction_service", tx_restarts([10, 300, 899]))
	not d.allow
	t.names_rule(d, "rate_limit.restart_service")
	has_reason(d, "\"transaction-service\" may be restarted at most 3 times in 900 s")
	has_reason(d, next_at(t.now + t.sec))
}

test_restart_one_over_the_limit_is_denied if {
	d := data.par.decision with input as t.sre("restart_transaction_service", tx_restarts([10, 300, 500, 800]))
	t.names_rule(d, "rate_limit.restart_service")
	has_reason(d, next_at(t.now + (400 * t.sec)))
}

test_restart_exactly_one_window_ago_no_longer_counts if {
	d := data.par.decision with input as t.sre("restart_transaction_service", tx_restarts([10, 300, 900]))
	d.allow
}

test_restart_limit_is_per_service if {
	h := [t.ran("restart_pix_worker", a, "pix-worker") | some a in [10, 20, 30, 40]]
	d := data.par.decision with input as t.sre("restart_transaction_service", h)
	d.allow
}

test_group_restart_counts_for_each_service if {
	h := array.concat(tx_restarts([10, 300]), [t.ran("restart_all_backend", 3000, "transaction-service")])
	d := data.par.decision with input as t.sre("restart_transaction_service", h)
		with data.dogbank.rate_limits.restart_per_service.window_s as 3600
	t.names_rule(d, "rate_limit.restart_service")
}

test_diagnostics_do_not_count_as_restarts if {
	h := [t.ran("check_service_logs_kafka", a, "transaction-service") | some a in [10, 20, 30, 40]]
	d := data.par.decision with input as t.sre("restart_transaction_service", h)
	d.allow
}

test_group_restart_is_blocked_by_restarts_of_one_of_its_services if {
	h := [t.ran("restart_pix_worker", a, "pix-worker") | some a in [10, 20, 30]]
	d := data.par.decision with input as t.doc("restart_all_backend", t.user(["platform-admin"]), t.manual, h)
	not d.allow
	t.names_rule(d, "rate_limit.restart_service")
	has_reason(d, "\"pix-worker\"")
}

test_failed_restarts_count_too if {
	h := [t.ran_with("restart_transaction_service", a, "transaction-service", "failure") | some a in [10, 20, 30]]
	d := data.par.decision with input as t.sre("restart_transaction_service", h)
	t.names_rule(d, "rate_limit.restart_service")
}

# --- restart_all_backend / restart_messaging: at most once an hour -------------------------------

admin(action, history) := t.doc(action, t.user(["platform-admin"]), t.manual, history)

# One execution of a group restart is one history entry per service it touched.
group_run(action, ago) := [t.ran(action, ago, s) | some s in t.info[action].services]

test_group_restart_first_in_the_hour_is_allowed if {
	d := data.par.decision with input as admin("restart_all_backend", [])
	d.allow
}

test_group_restart_at_the_limit_is_denied if {
	d := data.par.decision with input as admin("restart_all_backend", group_run("restart_all_backend", 3599))
	not d.allow
	t.names_rule(d, "rate_limit.action")
	has_reason(d, next_at(t.now + t.sec))
}

test_group_restart_exactly_one_hour_later_is_allowed if {
	d := data.par.decision with input as admin("restart_all_backend", group_run("restart_all_backend", 3600))
	d.allow
}

test_group_restart_one_over_the_limit_is_denied if {
	h := array.concat(group_run("restart_messaging", 100), group_run("restart_messaging", 2000))
	d := data.par.decision with input as admin("restart_messaging", h)
	t.names_rule(d, "rate_limit.action")
	# Both runs must leave the window: the newer (100 s ago) leaves at +3500 s.
	has_reason(d, next_at(t.now + (3500 * t.sec)))
}

test_group_restart_fan_out_counts_as_one_run if {
	d := data.par.decision with input as admin("restart_all_backend", group_run("restart_all_backend", 3000))
		with data.dogbank.rate_limits.per_action.restart_all_backend.max as 2
		with data.dogbank.rate_limits.restart_per_service.max as 10
	d.allow
}

test_group_restart_limits_are_per_action if {
	d := data.par.decision with input as admin("restart_all_backend", group_run("restart_messaging", 100))
	d.allow
}

# --- replicas: never above 5 ---------------------------------------------------------------------

test_scale_to_five_is_allowed if {
	d := data.par.decision with input as t.sre("scale_pix_worker_5", [])
	d.allow
}

test_scale_above_five_is_denied if {
	inp := object.union(t.sre("scale_pix_worker_5", []), {"action_info": object.union(t.info.scale_pix_worker_5, {"replicas": 6})})
	d := data.par.decision with input as inp
	not d.allow
	t.names_rule(d, "limit.max_replicas")
	has_reason(d, "scaling to 6 replicas is above the maximum of 5")
}

test_replicas_parameter_above_five_is_denied if {
	inp := object.union(t.sre("scale_pix_worker_3", []), {"parameters": {"replicas": 9}})
	d := data.par.decision with input as inp
	t.names_rule(d, "limit.max_replicas")
}

test_scale_without_replica_count_is_denied if {
	inp := object.union(t.sre("scale_pix_worker_3", []), {"action_info": object.union(t.info.scale_pix_worker_3, {"replicas": null})})
	d := data.par.decision with input as inp
	t.names_rule(d, "limit.max_replicas")
}

test_max_replicas_comes_from_data if {
	d := data.par.decision with input as t.sre("scale_pix_worker_5", [])
		with data.dogbank.max_replicas as 3
	t.names_rule(d, "limit.max_replicas")
}
