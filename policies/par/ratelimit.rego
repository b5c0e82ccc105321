# Rate and size limits. Every execution in input.history counts, whatever its outcome (a failed or
# timed-out run still touched the system, and not counting it would let failures bypass the limit).
# A timestamp counts while now - ts < window (strictly), so an attempt is allowed again at exactly
# ts + window; every denial says when. Windows must not exceed policy.history_window_s (3600 s), the
# history the runner passes in. Each limit scans the history only for the category it applies to,
# with the conditions inlined, the action's category included (data.dogbank.actions[input.action]; see
# the note in authz.rego on the interpreter's cost model). Comprehension terms are plain variables bound
# in the body (`ts := h.ts_ns`), as the compiled-mode lint requires (docs/policy-input.md, "Embedded modes").
package par.ratelimit

import rego.v1

# --- scaling: at most N in any window, and a minimum interval --------------------------------------

# [ts_ns, action] of every scaling run in the window (pairs, so one run is counted once).
scale_runs := {[ts, name] |
	actions := data.dogbank.actions
	window := data.dogbank.rate_limits.scale.window_s * 1000000000
	some h in input.history
	name := h.action
	actions[name] == "scale"
	ts := h.ts_ns
	input.now_ns - ts < window
}

# The scaling limits are checked only for a scaling action: one test here instead of one per limit.
deny contains denial if {
	data.dogbank.actions[input.action] == "scale"
	some denial in scale_deny
}

scale_deny contains {"rule": "rate_limit.scale_count", "reason": reason} if {
	limit := data.dogbank.rate_limits.scale
	count(scale_runs) >= limit.max
	runs := sort(scale_runs)
	next := runs[count(runs) - limit.max][0] + (limit.window_s * 1000000000)
	reason := sprintf(
		"rate_limit.scale_count: at most %d scaling operations in any %d s, and %d already ran; next attempt allowed at %s (in %d s)",
		[limit.max, limit.window_s, count(runs), time.format(next), seconds_until(next)],
	)
}

scale_deny contains {"rule": "rate_limit.scale_interval", "reason": reason} if {
	interval := data.dogbank.rate_limits.scale.min_interval_s * 1000000000
	recent := [ts | some run in scale_runs; ts := run[0]; input.now_ns - ts < interval]
	count(recent) > 0
	next := max(recent) + interval
	reason := sprintf(
		"rate_limit.scale_interval: scaling operations must be at least %d s apart; next attempt allowed at %s (in %d s)",
		[data.dogbank.rate_limits.scale.min_interval_s, time.format(next), seconds_until(next)],
	)
}

# --- restarts of the same service (a group restart restarts each of its services) ------------------

deny contains {"rule": "rate_limit.restart_service", "reason": reason} if {
	limit := data.dogbank.rate_limits.restart_per_service
	actions := data.dogbank.actions
	actions[input.action] in limit.categories
	window := limit.window_s * 1000000000
	some service in input.action_info.services
	runs := sort({[ts, name] |
		some h in input.history
		h.service == service
		name := h.action
		actions[name] in limit.categories
		ts := h.ts_ns
		input.now_ns - ts < window
	})
	count(runs) >= limit.max
	next := runs[count(runs) - limit.max][0] + window
	reason := sprintf(
		"rate_limit.restart_service: %q may be restarted at most %d times in %d s, and was restarted %d times; next attempt allowed at %s (in %d s)",
		[service, limit.max, limit.window_s, count(runs), time.format(next), seconds_until(next)],
	)
}

# --- per-action limits (restart_all_backend, restart_messaging: once an hour) ----------------------

deny contains {"rule": "rate_limit.action", "reason": reason} if {
	limit := data.dogbank.rate_limits.per_action[input.action]
	window := limit.window_s * 1000000000
	runs := sort({ts |
		some h in input.history
		h.action == input.action
		ts := h.ts_ns
		input.now_ns - ts < window
	})
	count(runs) >= limit.max
	next := runs[count(runs) - limit.max] + window
	reason := sprintf(
		"rate_limit.action: %q may run at most %d time(s) in %d s; next attempt allowed at %s (in %d s)",
		[input.action, limit.max, limit.window_s, time.format(next), seconds_until(next)],
	)
}

# --- replicas --------------------------------------------------------------------------------------

scale_deny contains {"rule": "limit.max_replicas", "reason": reason} if {
	some n in [object.get(input.action_info, "replicas", null), object.get(input.parameters, "replicas", null)]
	is_number(n)
	n > data.dogbank.max_replicas
	reason := sprintf("limit.max_replicas: scaling to %d replicas is above the maximum of %d", [n, data.dogbank.max_replicas])
}

scale_deny contains {"rule": "limit.max_replicas", "reason": reason} if {
	not is_number(object.get(input.action_info, "replicas", null))
	not is_number(object.get(input.parameters, "replicas", null))
	reason := sprintf("limit.max_replicas: scale action %q declares no replica count, so it cannot be checked", [input.action])
}

seconds_until(ts) := ceil((ts - input.now_ns) / 1000000000)
