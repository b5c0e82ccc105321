# Who may trigger what. A task is allowed only if at least one grant below matches; every grant and
# every denial names its rule. Users get roles (data.dogbank.roles: categories, actions and
# action_prefixes, all three keys required); the two DogBank workflows may only run their own actions,
# and only when their own monitor fired; any authenticated principal may run diagnostics. Everything
# else is denied.
#
# Written for the embedded interpreter's cost model (docs/policy-input.md): a rule reference or a
# `data.` lookup costs far more than an `input.` test, so the grants (evaluated on every decision)
# inline their conditions, including the action's category (data.dogbank.actions[input.action],
# undefined for an unknown action) and the trigger's workflow-name check; other packages are
# referenced by full path (an import alias makes regorus evaluate the whole imported package); the
# denial explanations are only evaluated on the deny path.
package par.authz

import rego.v1

# --- grants ----------------------------------------------------------------------------------------

grants contains {"rule": "authz.diagnostics", "reason": reason} if {
	is_string(input.principal.id)
	input.principal.id != ""
	category := data.dogbank.actions[input.action]
	category in data.dogbank.authenticated.categories
	reason := sprintf("authz.diagnostics: any authenticated principal may run %s actions", [category])
}

grants contains {"rule": "authz.workflow", "reason": reason} if {
	input.principal.type == "workflow"
	workflow := data.dogbank.workflows[input.principal.name]
	input.action in workflow.actions
	input.trigger.type == "monitor"
	input.trigger.monitor_name in workflow.monitors
	object.get(input.trigger, "workflow_name", null) in {null, input.principal.name}
	reason := sprintf("authz.workflow: workflow %q may run %q when monitor %q triggers it", [input.principal.name, input.action, input.trigger.monitor_name])
}

# One body for all three ways a role can permit an action (role_permits), so a non-user principal
# costs one failed test here instead of three. The rule id is bound in the body, not computed in the
# head: the compiled engine would store an undefined head part as a "<undefined>" grant.
grants contains {"rule": rule, "reason": reason} if {
	input.principal.type == "user"
	input.principal.id != ""
	some role in input.principal.roles
	role_permits(data.dogbank.roles[role])
	category := data.dogbank.actions[input.action]
	rule := sprintf("authz.role.%s", [role])
	reason := sprintf("authz.role.%s: role %q may run %q (category %s)", [role, role, input.action, category])
}

# A role (data.dogbank.roles[name]) permits an action by its category, by name, or by a name prefix.
role_permits(grant) if data.dogbank.actions[input.action] in grant.categories

role_permits(grant) if input.action in grant.actions

role_permits(grant) if {
	some prefix in grant.action_prefixes
	startswith(input.action, prefix)
}

# A trigger that names a workflow must name the principal's own workflow.
workflow_name_consistent if object.get(input.trigger, "workflow_name", null) == null

workflow_name_consistent if input.trigger.workflow_name == input.principal.name

# --- denials: only when nothing granted, each saying what was missing -----------------------------

# One test for "nothing granted" instead of one per explanation below.
deny contains denial if {
	count(grants) == 0
	some denial in why_not
}

why_not contains {"rule": "authz.workflow", "reason": reason} if {
	input.principal.type == "workflow"
	not data.dogbank.workflows[input.principal.name]
	reason := sprintf("authz.workflow: workflow %q is not in data.dogbank.workflows; it may only run diagnostics", [input.principal.name])
}

why_not contains {"rule": "authz.workflow", "reason": reason} if {
	input.principal.type == "workflow"
	workflow := data.dogbank.workflows[input.principal.name]
	not input.action in workflow.actions
	reason := sprintf("authz.workflow: workflow %q may only run %s, not %q", [input.principal.name, concat(", ", workflow.actions), input.action])
}

why_not contains {"rule": "authz.workflow", "reason": reason} if {
	input.principal.type == "workflow"
	workflow := data.dogbank.workflows[input.principal.name]
	input.action in workflow.actions
	not monitor_matches(workflow)
	reason := sprintf(
		"authz.workflow: workflow %q may run %q only when triggered by monitor %s (got trigger %s, monitor %v)",
		[input.principal.name, input.action, concat(" or ", [q | some m in workflow.monitors; q := sprintf("%q", [m])]), input.trigger.type, object.get(input.trigger, "monitor_name", null)],
	)
}

why_not contains {"rule": "authz.workflow", "reason": reason} if {
	input.principal.type == "workflow"
	workflow := data.dogbank.workflows[input.principal.name]
	input.action in workflow.actions
	monitor_matches(workflow)
	not workflow_name_consistent
	reason := sprintf("authz.workflow: principal is workflow %q but the trigger names workflow %q", [input.principal.name, input.trigger.workflow_name])
}

why_not contains {"rule": "authz.role", "reason": reason} if {
	input.principal.type == "user"
	reason := sprintf(
		"authz.role: user %q with roles [%s] may not run %q (category %s)",
		[input.principal.id, concat(", ", input.principal.roles), input.action, object.get(data.dogbank.actions, input.action, "unknown")],
	)
}

why_not contains {"rule": "authz.service", "reason": reason} if {
	input.principal.type == "service"
	reason := sprintf("authz.service: service principal %q may only run diagnostics, not %q", [input.principal.id, input.action])
}

why_not contains {"rule": "authz", "reason": reason} if {
	not input.principal.type in {"workflow", "user", "service"}
	reason := sprintf("authz: unknown principal type %v; only workflow, user and service exist", [object.get(input.principal, "type", null)])
}

monitor_matches(workflow) if {
	input.trigger.type == "monitor"
	input.trigger.monitor_name in workflow.monitors
}
