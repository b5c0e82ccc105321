# Tests for the Docker proxy policy (run with `par policy test policies/`).
# Inputs mirror what sandbox/proxy.py builds; `replica` is a compose scale-up create that must pass.
package par.docker_proxy_test

import rego.v1

project := "dogbank"

req(method, endpoint, extra) := object.union(
	{
		"project": project, "method": method, "endpoint": endpoint, "path": "/x", "api_version": "1.41",
		"query": {}, "upgrade": false, "object": null, "body": null,
	},
	extra,
)

container(proj, service) := {"kind": "container", "id": "abc", "name": "n", "project": proj, "service": service, "oneoff": false}

replica := {
	"name": "dogbank-pix-worker-2",
	"image": "dogbank/standin:local",
	"labels": {"project": "dogbank", "service": "pix-worker", "oneoff": "False", "foreign_keys": []},
	"privileged": false, "cap_add": [], "devices": [], "device_requests": [], "device_cgroup_rules": [],
	"security_opt": [], "sysctls": {}, "runtime": "", "cgroup_parent": "", "cgroup": "",
	"masked_paths": null, "readonly_paths": null, "port_bindings": {}, "publish_all_ports": false,
	"volumes_from": [], "auto_remove": false,
	"namespaces": {"network": "none", "pid": "", "ipc": "", "uts": "", "userns": "", "cgroupns": ""},
	"log_driver": "", "binds": [], "mounts": [],
	"reference": {"found": true, "id": "ref", "name": "dogbank-pix-worker-1"},
	"mismatches": [], "undeclared_mounts": [],
}

create(changes) := req("POST", "container.create", {"query": {"name": object.get(changes, "name", replica.name)}, "body": object.union(replica, changes)})

kafka_list := ["kafka-topics", "--bootstrap-server", "localhost:9092", "--list"]

exec_body(changes) := object.union(
	{"cmd": kafka_list, "cmd_is_strings": true, "user": "", "privileged": false, "env": [], "working_dir": "", "tty": false, "detach_keys": ""},
	changes,
)

decide(inp) := d if {
	d := data.par.docker_proxy.decision with input as inp
}

denied_by(inp, rule) if {
	d := decide(inp)
	d.allow == false
	rule in d.rule_ids
}

allowed(inp) if decide(inp).allow == true

# --- what compose needs ---------------------------------------------------------------------------

test_ping_and_version_allowed if {
	allowed(req("HEAD", "ping", {}))
	allowed(req("GET", "version", {}))
}

test_project_container_lifecycle_allowed if {
	every ep in ["container.restart", "container.stop", "container.start"] {
		allowed(req("POST", ep, {"object": container(project, "pix-worker")}))
	}
	allowed(req("DELETE", "container.delete", {"object": container(project, "pix-worker"), "query": {"force": "1"}}))
	allowed(req("GET", "container.logs", {"object": container(project, "kafka"), "query": {"follow": "1", "tail": "5", "stdout": "1", "stderr": "1"}}))
}

test_replica_create_allowed if allowed(create({}))

test_recreate_name_allowed if allowed(create({"name": "0123456789ab_dogbank-pix-worker-2"}))

test_rename_to_replica_name_allowed if {
	allowed(req("POST", "container.rename", {"object": container(project, "pix-worker"), "query": {"name": "dogbank-pix-worker-1"}}))
}

test_kafka_list_exec_allowed if {
	allowed(req("POST", "exec.create", {"object": container(project, "kafka"), "body": exec_body({})}))
	allowed(req("POST", "exec.start", {
		"object": {"kind": "exec", "id": "e", "name": "", "project": project, "service": "kafka", "oneoff": false},
		"exec": {"cmd": kafka_list, "user": "", "privileged": false, "running": false},
		"upgrade": true, "body": {},
	}))
}

test_lists_with_own_project_filter_allowed if {
	allowed(req("GET", "containers.list", {"query": {"all": "1", "filters": "{}"}, "filter_projects": ["dogbank"]}))
	allowed(req("GET", "events", {"query": {"filters": "{}"}, "filter_projects": []}))
}

test_project_image_inspect_allowed if {
	allowed(req("GET", "image.inspect", {"image": {"ref": "dogbank/standin:local", "in_project": true}}))
}

test_plain_volume_create_allowed if {
	allowed(req("POST", "volume.create", {"body": {"name": "dogbank_data", "driver": "local", "driver_opts": {}, "labels": {"project": "dogbank"}}}))
}

# --- scoping --------------------------------------------------------------------------------------

test_other_project_container_denied if {
	every ep in ["container.restart", "container.stop", "container.inspect", "container.logs", "exec.create"] {
		denied_by(req("POST", ep, {"object": container("other", "kafka"), "body": exec_body({})}), "outside_project")
	}
}

test_unlabelled_container_denied if denied_by(req("POST", "container.restart", {"object": container(null, null)}), "outside_project")

test_missing_object_denied if denied_by(req("POST", "container.restart", {}), "object_not_found")

test_other_project_filter_denied if {
	denied_by(req("GET", "containers.list", {"filter_projects": ["other"]}), "filter_other_project")
}

test_unknown_routes_denied if {
	every ep in ["unknown", "image.pull", "build", "commit", "swarm", "plugins", "secrets", "info", "system.df"] {
		denied_by(req("POST", ep, {}), "route_not_allowed")
	}
}

test_wrong_method_denied if denied_by(req("POST", "containers.list", {}), "method_not_allowed")

test_unknown_query_denied if {
	denied_by(req("DELETE", "container.delete", {"object": container(project, "kafka"), "query": {"link": "1"}}), "query_not_allowed")
}

test_foreign_image_inspect_denied if {
	denied_by(req("GET", "image.inspect", {"image": {"ref": "alpine", "in_project": false}}), "image_outside_project")
}

# --- container create -----------------------------------------------------------------------------

create_cases := {
	"privileged": [{"privileged": true}, "create_privileged"],
	"cap_add": [{"cap_add": ["SYS_ADMIN"]}, "create_cap_add"],
	"devices": [{"devices": [{"PathOnHost": "/dev/sda"}]}, "create_devices"],
	"security_opt": [{"security_opt": ["seccomp=unconfined"]}, "create_security_opt"],
	"sysctls": [{"sysctls": {"kernel.x": "1"}}, "create_sysctls"],
	"runtime": [{"runtime": "runsc"}, "create_runtime"],
	"cgroup_parent": [{"cgroup_parent": "/"}, "create_cgroup"],
	"masked": [{"masked_paths": []}, "create_masked_paths"],
	"readonly": [{"readonly_paths": []}, "create_masked_paths"],
	"ports": [{"port_bindings": {"80/tcp": [{"HostPort": "80"}]}}, "create_ports"],
	"publish_all": [{"publish_all_ports": true}, "create_ports"],
	"host_pid": [{"namespaces": object.union(replica.namespaces, {"pid": "host"})}, "create_namespaces"],
	"host_net": [{"namespaces": object.union(replica.namespaces, {"network": "host"})}, "create_namespaces"],
	"container_ipc": [{"namespaces": object.union(replica.namespaces, {"ipc": "container:abc"})}, "create_namespaces"],
	"bind_root": [{"undeclared_mounts": ["bind /:/host"]}, "create_mounts"],
	"volumes_from": [{"volumes_from": ["other"]}, "create_mounts"],
	"other_image": [{"mismatches": ["Image", "ImageID"]}, "create_not_replica"],
	"other_user": [{"mismatches": ["User"]}, "create_not_replica"],
	"no_reference": [{"reference": {"found": false, "id": ""}}, "create_no_reference"],
	"foreign_project_label": [{"labels": object.union(replica.labels, {"project": "other"})}, "create_labels"],
	"oneoff": [{"labels": object.union(replica.labels, {"oneoff": "True"})}, "create_labels"],
	"extra_label": [{"labels": object.union(replica.labels, {"foreign_keys": ["evil"]})}, "create_labels"],
	"bad_name": [{"name": "evil"}, "create_name"],
	"log_driver": [{"log_driver": "syslog"}, "create_log_driver"],
	"auto_remove": [{"auto_remove": true}, "create_auto_remove"],
}

test_create_attacks_denied if {
	every note, tc in create_cases {
		denied_by(create(tc[0]), tc[1])
		note != ""
	}
}

test_create_without_body_denied if denied_by(req("POST", "container.create", {}), "body_required")

# --- exec -----------------------------------------------------------------------------------------

test_exec_other_command_denied if {
	denied_by(req("POST", "exec.create", {"object": container(project, "kafka"), "body": exec_body({"cmd": ["sh", "-c", "id"]})}), "exec_command")
	denied_by(req("POST", "exec.create", {"object": container(project, "pix-worker"), "body": exec_body({})}), "exec_command")
}

test_exec_privileged_or_user_denied if {
	denied_by(req("POST", "exec.create", {"object": container(project, "kafka"), "body": exec_body({"privileged": true})}), "exec_privileged")
	denied_by(req("POST", "exec.create", {"object": container(project, "kafka"), "body": exec_body({"user": "root"})}), "exec_user")
	denied_by(req("POST", "exec.create", {"object": container(project, "kafka"), "body": exec_body({"env": ["A=1"]})}), "exec_options")
}

test_exec_start_checks_the_engine_record if {
	base := {
		"object": {"kind": "exec", "id": "e", "name": "", "project": project, "service": "kafka", "oneoff": false},
		"upgrade": true, "body": {},
	}
	denied_by(req("POST", "exec.start", object.union(base, {"exec": {"cmd": ["sh"], "user": "", "privileged": false, "running": false}})), "exec_command")
	denied_by(req("POST", "exec.start", object.union(base, {"exec": {"cmd": kafka_list, "user": "0", "privileged": false, "running": false}})), "exec_privileged")
	denied_by(req("POST", "exec.start", object.union(base, {"upgrade": false, "exec": {"cmd": kafka_list, "user": "", "privileged": false, "running": false}})), "exec_start_hijack")
}

# --- volumes --------------------------------------------------------------------------------------

test_volume_driver_opts_denied if {
	denied_by(req("POST", "volume.create", {"body": {"name": "dogbank_x", "driver": "local", "driver_opts": {"type": "none", "device": "/", "o": "bind"}, "labels": {"project": "dogbank"}}}), "volume_driver")
	denied_by(req("POST", "volume.create", {"body": {"name": "other_x", "driver": "", "driver_opts": {}, "labels": {"project": "dogbank"}}}), "volume_create")
}

# --- decision shape -------------------------------------------------------------------------------

test_every_deny_reason_names_its_rule if {
	d := decide(create({"privileged": true, "cap_add": ["ALL"]}))
	not d.allow
	every r in d.reasons {
		some id in d.rule_ids
		startswith(r, sprintf("%s:", [id]))
	}
}

test_empty_input_denied if {
	d := decide({})
	d.allow == false
	count(d.reasons) > 0
}
