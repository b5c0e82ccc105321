# Allowlist: an action runs only if BOTH the runner's catalog (config/credentials/script.yaml, passed
# as input.action_info) and this policy's data (data.dogbank.actions) know it, with the same category.
# Two lists owned by two teams: adding a command to the catalog does not by itself make it runnable.
#
# The category the policy trusts comes from the policy data, never from the input. It is looked up
# inline (data.dogbank.actions[input.action]) rather than through a helper rule, which the embedded
# interpreter would charge for on every decision (see authz.rego).
package par.allowlist

import rego.v1

deny contains {"rule": "allowlist", "reason": reason} if {
	not data.dogbank.actions[input.action]
	reason := sprintf("allowlist: action %q is not in the policy allowlist (data.dogbank.actions); unknown actions are denied", [input.action])
}

deny contains {"rule": "allowlist", "reason": reason} if {
	object.get(input, "action_info", null) == null
	reason := sprintf("allowlist: action %q is not in the runner's action catalog", [input.action])
}

deny contains {"rule": "allowlist", "reason": reason} if {
	is_object(input.action_info)
	category := data.dogbank.actions[input.action]
	category != false
	input.action_info.category != category
	reason := sprintf(
		"allowlist: action %q has category %q in the catalog but %q in the policy data; fix one of them",
		[input.action, input.action_info.category, category],
	)
}
