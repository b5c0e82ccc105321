# Allowlist: an action runs only if BOTH the runner's catalog (config/credentials/script.yaml, passed
# as input.action_info) and this policy's data (data.dogbank.actions) know it, with the same category.
# Two lists owned by two teams: adding a command to the catalog does not by itself make it runnable.
package par.allowlist

import rego.v1

# The category the policy trusts: from the policy data, never from the input.
category := data.dogbank.actions[input.action]

known if category

deny contains {"rule": "allowlist", "reason": reason} if {
	not known
	reason := sprintf("allowlist: action %q is not in the policy allowlist (data.dogbank.actions); unknown actions are denied", [input.action])
}

deny contains {"rule": "allowlist", "reason": reason} if {
	object.get(input, "action_info", null) == null
	reason := sprintf("allowlist: action %q is not in the runner's action catalog", [input.action])
}

deny contains {"rule": "allowlist", "reason": reason} if {
	known
	is_object(input.action_info)
	input.action_info.category != category
	reason := sprintf(
		"allowlist: action %q has category %q in the catalog but %q in the policy data; fix one of them",
		[input.action, input.action_info.category, category],
	)
}
