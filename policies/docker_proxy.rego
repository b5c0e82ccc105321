# The Docker socket proxy's decision (data.par.docker_proxy.decision).
#
# The proxy (sandbox/proxy.py) parses each request strictly, resolves names and ID prefixes on the
# engine, reads the compose labels of the object it found, and describes the request in a normalized
# input document:
#   input.project    the only compose project the proxy serves
#   input.method     "GET" | "HEAD" | "POST" | "DELETE" | ...
#   input.endpoint   normalized route, e.g. "container.restart" ("unknown" if no route matched)
#   input.query      decoded query parameters (names are unique)
#   input.object     the resolved target {kind, id, name, project, service, oneoff}, or null
#   input.body       facts about the checked JSON body (see sandbox/_internal/proxy_inspect.py), or null
#   input.exec       for exec.start: what the engine says the exec will run
#   input.image      for image.inspect: {ref, in_project}
# Everything not allowed here is refused. Each deny names its rule id; the first word of a reason is it.
package par.docker_proxy

import rego.v1

# Routes compose v2 uses for the catalog's actions (measured against API 1.41) and their query parameters.
# scoped: the request targets one object that must carry the project label.
routes := {
	"ping": {"methods": {"GET", "HEAD"}, "query": set(), "scoped": false},
	"version": {"methods": {"GET"}, "query": set(), "scoped": false},
	"containers.list": {"methods": {"GET"}, "query": {"all", "filters", "limit", "size"}, "scoped": false},
	"container.inspect": {"methods": {"GET"}, "query": {"size"}, "scoped": true},
	"container.start": {"methods": {"POST"}, "query": set(), "scoped": true},
	"container.stop": {"methods": {"POST"}, "query": {"t", "signal"}, "scoped": true},
	"container.restart": {"methods": {"POST"}, "query": {"t", "signal"}, "scoped": true},
	"container.delete": {"methods": {"DELETE"}, "query": {"force", "v"}, "scoped": true},
	"container.create": {"methods": {"POST"}, "query": {"name"}, "scoped": false},
	"container.rename": {"methods": {"POST"}, "query": {"name"}, "scoped": true},
	"container.logs": {
		"methods": {"GET"},
		"query": {"follow", "stdout", "stderr", "since", "until", "timestamps", "tail", "details"},
		"scoped": true,
	},
	"exec.create": {"methods": {"POST"}, "query": set(), "scoped": true},
	"exec.start": {"methods": {"POST"}, "query": set(), "scoped": true},
	"exec.inspect": {"methods": {"GET"}, "query": set(), "scoped": true},
	"events": {"methods": {"GET"}, "query": {"filters", "since", "until"}, "scoped": false},
	"image.inspect": {"methods": {"GET"}, "query": set(), "scoped": false},
	"volumes.list": {"methods": {"GET"}, "query": {"filters"}, "scoped": false},
	"volume.inspect": {"methods": {"GET"}, "query": set(), "scoped": true},
	"volume.create": {"methods": {"POST"}, "query": set(), "scoped": false},
	"networks.list": {"methods": {"GET"}, "query": {"filters"}, "scoped": false},
	"network.inspect": {"methods": {"GET"}, "query": {"verbose", "scope"}, "scoped": true},
}

# The only commands that may be exec'd, per compose service (argv exactly as the catalog sends it).
allowed_exec := {"kafka": [["kafka-topics", "--bootstrap-server", "localhost:9092", "--list"]]}

# Calls that change engine state; the proxy audits every allowed one.
state_changing := {
	"container.start", "container.stop", "container.restart", "container.delete", "container.create",
	"container.rename", "exec.create", "exec.start", "volume.create",
}

route := routes[input.endpoint]

# --- routing --------------------------------------------------------------------------------------

deny contains {"rule": "route_not_allowed", "reason": reason} if {
	not route
	reason := sprintf("route_not_allowed: %s %s is not an endpoint compose needs for the catalog's actions", [input.method, input.path])
}

deny contains {"rule": "method_not_allowed", "reason": reason} if {
	route
	not input.method in route.methods
	reason := sprintf("method_not_allowed: %s is not allowed on %s", [input.method, input.endpoint])
}

deny contains {"rule": "query_not_allowed", "reason": reason} if {
	route
	some name, _ in input.query
	not name in route.query
	reason := sprintf("query_not_allowed: query parameter %q is not allowed on %s", [name, input.endpoint])
}

# --- project scoping ------------------------------------------------------------------------------

deny contains {"rule": "object_not_found", "reason": reason} if {
	route.scoped
	not is_object(input.object)
	reason := sprintf("object_not_found: %s refers to nothing the engine knows", [input.endpoint])
}

deny contains {"rule": "outside_project", "reason": reason} if {
	route.scoped
	is_object(input.object)
	object.get(input.object, "project", null) != input.project
	reason := sprintf(
		"outside_project: %s %s belongs to project %v, not %q",
		[input.object.kind, input.object.name, object.get(input.object, "project", null), input.project],
	)
}

# A list or event filter naming another project is refused outright (not just emptied), so a compose
# command aimed at another project fails loudly instead of "succeeding" on nothing.
deny contains {"rule": "filter_other_project", "reason": reason} if {
	some p in object.get(input, "filter_projects", [])
	p != input.project
	reason := sprintf("filter_other_project: this proxy serves project %q only, the request asks for %q", [input.project, p])
}

# --- container create: a plain replica of a project service ----------------------------------------

body := object.get(input, "body", null)

deny contains {"rule": "body_required", "reason": reason} if {
	input.endpoint in {"container.create", "exec.create", "volume.create"}
	not is_object(body)
	reason := sprintf("body_required: %s needs a JSON object body", [input.endpoint])
}

deny contains {"rule": "create_labels", "reason": reason} if {
	input.endpoint == "container.create"
	body.labels.project != input.project
	reason := sprintf("create_labels: the new container must be labelled with project %q", [input.project])
}

deny contains {"rule": "create_labels", "reason": "create_labels: one-off (compose run) containers are not allowed"} if {
	input.endpoint == "container.create"
	body.labels.oneoff != "False"
}

deny contains {"rule": "create_labels", "reason": reason} if {
	input.endpoint == "container.create"
	count(body.labels.foreign_keys) > 0
	reason := sprintf("create_labels: only com.docker.compose.* labels may be set, got %v", [body.labels.foreign_keys])
}

deny contains {"rule": "create_no_reference", "reason": reason} if {
	input.endpoint == "container.create"
	not body.reference.found
	reason := sprintf(
		"create_no_reference: service %v of project %q has no existing container to replicate (labels alone are not trusted)",
		[body.labels.service, input.project],
	)
}

deny contains {"rule": "create_not_replica", "reason": reason} if {
	input.endpoint == "container.create"
	count(body.mismatches) > 0
	reason := sprintf("create_not_replica: differs from the service's existing container in %v", [body.mismatches])
}

deny contains {"rule": "create_name", "reason": reason} if {
	input.endpoint == "container.create"
	not replica_name(body.name, body.labels.service)
	reason := sprintf("create_name: name %q is not a compose replica name of the service", [body.name])
}

deny contains {"rule": "create_privileged", "reason": "create_privileged: privileged containers are not allowed"} if {
	input.endpoint == "container.create"
	body.privileged
}

create_nonempty := {
	"cap_add": "create_cap_add",
	"devices": "create_devices",
	"device_requests": "create_devices",
	"device_cgroup_rules": "create_devices",
	"security_opt": "create_security_opt",
	"sysctls": "create_sysctls",
	"port_bindings": "create_ports",
	"volumes_from": "create_mounts",
	"undeclared_mounts": "create_mounts",
	"runtime": "create_runtime",
	"cgroup_parent": "create_cgroup",
	"cgroup": "create_cgroup",
}

deny contains {"rule": rule, "reason": reason} if {
	input.endpoint == "container.create"
	some field, rule in create_nonempty
	not empty(body[field])
	reason := sprintf("%s: %s must not be set (got %v)", [rule, field, body[field]])
}

deny contains {"rule": "create_masked_paths", "reason": reason} if {
	input.endpoint == "container.create"
	some field in ["masked_paths", "readonly_paths"]
	body[field] != null
	reason := sprintf("create_masked_paths: %s must be left to the engine default (got %v)", [field, body[field]])
}

deny contains {"rule": "create_ports", "reason": "create_ports: PublishAllPorts is not allowed"} if {
	input.endpoint == "container.create"
	body.publish_all_ports
}

deny contains {"rule": "create_namespaces", "reason": reason} if {
	input.endpoint == "container.create"
	some ns, mode in body.namespaces
	shared_namespace(mode)
	reason := sprintf("create_namespaces: %s namespace mode %q shares the host's or another container's", [ns, mode])
}

deny contains {"rule": "create_log_driver", "reason": reason} if {
	input.endpoint == "container.create"
	not body.log_driver in {"", "json-file", "local"}
	reason := sprintf("create_log_driver: log driver %q is not allowed", [body.log_driver])
}

deny contains {"rule": "create_auto_remove", "reason": "create_auto_remove: AutoRemove is not allowed"} if {
	input.endpoint == "container.create"
	body.auto_remove
}

# --- rename (compose's recreate path) ---------------------------------------------------------------

deny contains {"rule": "rename_name", "reason": reason} if {
	input.endpoint == "container.rename"
	not replica_name(object.get(input.query, "name", ""), input.object.service)
	reason := sprintf("rename_name: %q is not a compose replica name of the container's service", [object.get(input.query, "name", "")])
}

# --- exec -------------------------------------------------------------------------------------------

deny contains {"rule": "exec_command", "reason": reason} if {
	input.endpoint == "exec.create"
	not exec_allowed(input.object.service, body.cmd)
	reason := sprintf("exec_command: %v is not an allowed command in service %v", [body.cmd, input.object.service])
}

deny contains {"rule": "exec_privileged", "reason": "exec_privileged: exec with Privileged is not allowed"} if {
	input.endpoint == "exec.create"
	body.privileged
}

deny contains {"rule": "exec_user", "reason": reason} if {
	input.endpoint == "exec.create"
	body.user != ""
	reason := sprintf("exec_user: exec as user %q is not allowed (the image's user is used)", [body.user])
}

deny contains {"rule": "exec_options", "reason": "exec_options: Env, WorkingDir, Tty and DetachKeys must not be set"} if {
	input.endpoint == "exec.create"
	not exec_plain(body)
}

deny contains {"rule": "exec_command", "reason": reason} if {
	input.endpoint == "exec.start"
	not exec_allowed(input.object.service, input.exec.cmd)
	reason := sprintf("exec_command: exec %s runs %v, which is not allowed", [input.object.id, input.exec.cmd])
}

deny contains {"rule": "exec_start_hijack", "reason": "exec_start_hijack: exec start must use Connection: Upgrade"} if {
	input.endpoint == "exec.start"
	not input.upgrade
}

deny contains {"rule": "exec_privileged", "reason": "exec_privileged: the exec is privileged or runs as another user"} if {
	input.endpoint == "exec.start"
	not exec_unprivileged(input.exec)
}

# --- images and volumes -----------------------------------------------------------------------------

deny contains {"rule": "image_outside_project", "reason": reason} if {
	input.endpoint == "image.inspect"
	not input.image.in_project
	reason := sprintf("image_outside_project: image %q is not used by project %q", [input.image.ref, input.project])
}

deny contains {"rule": "volume_create", "reason": reason} if {
	input.endpoint == "volume.create"
	not startswith(body.name, concat("", [input.project, "_"]))
	reason := sprintf("volume_create: volume name %q must start with %q", [body.name, concat("", [input.project, "_"])])
}

deny contains {"rule": "volume_create", "reason": reason} if {
	input.endpoint == "volume.create"
	body.labels.project != input.project
	reason := sprintf("volume_create: the volume must be labelled with project %q", [input.project])
}

deny contains {"rule": "volume_driver", "reason": reason} if {
	input.endpoint == "volume.create"
	not volume_plain(body)
	reason := sprintf("volume_driver: only the local driver without options is allowed (got %q %v)", [body.driver, body.driver_opts])
}

# --- helpers ----------------------------------------------------------------------------------------

empty(x) if x == null

empty(x) if x == ""

empty(x) if x == false

empty(x) if {
	is_array(x)
	count(x) == 0
}

empty(x) if {
	is_object(x)
	count(x) == 0
}

empty(x) if {
	is_set(x)
	count(x) == 0
}

shared_namespace(mode) if mode == "host"

shared_namespace(mode) if startswith(mode, "container:")

shared_namespace(mode) if startswith(mode, "ns:")

# compose names replicas <project>-<service>-<n>; its recreate path uses <12 hex>_<project>-<service>-<n>.
replica_name(name, service) if {
	is_string(service)
	regex.match(sprintf("^([0-9a-f]{12}_)?%s-%s-[0-9]{1,4}$", [input.project, service]), name)
}

exec_allowed(service, cmd) if {
	some allowed in allowed_exec[service]
	cmd == allowed
}

exec_plain(b) if {
	empty(b.env)
	b.working_dir == ""
	b.tty == false
	b.detach_keys == ""
	b.cmd_is_strings
}

exec_unprivileged(e) if {
	e.privileged == false
	e.user == ""
}

volume_plain(b) if {
	b.driver in {"", "local"}
	empty(b.driver_opts)
}

# --- the decision -----------------------------------------------------------------------------------

denials := {d | some d in deny}

default decision := {
	"allow": false,
	"reasons": ["default_deny: no rule produced a decision"],
	"rule_ids": ["default_deny"],
}

# One rule with `else`, not two definitions: two definitions with different values are a conflict the
# compiled engine would not report; comprehension terms are plain variables (docs/policy-input.md,
# "Embedded modes").
decision := {
	"allow": true,
	"reasons": [sprintf("allow: %s on %s", [input.method, input.endpoint])],
	"rule_ids": [concat("", ["allow.", input.endpoint])],
} if {
	route
	count(denials) == 0
} else := {
	"allow": false,
	"reasons": [r | some d in sort(denials); r := d.reason],
	"rule_ids": sort({r | some d in denials; r := d.rule}),
} if {
	count(denials) > 0
}
