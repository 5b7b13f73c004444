# Developer commands. `make run` and `make test` do all the set-up they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLUSTER_DIR := .cluster
# Namespace to watch in `make run`; empty means all namespaces.
NAMESPACE ?=
# NODE=0: `make cluster` and `make run` start a control plane only (no kubelet; no root needed).
NODE ?= 1
UP := $(BIN)/python -m controlplane up --dir $(CLUSTER_DIR) --kubectl-link bin/kubectl \
	--crd crd.yaml $(if $(filter 0,$(NODE)),--no-node)

.PHONY: help lock hashes venv faults bench binaries image faketime cluster cluster-down run test lint typecheck unit integration manifests dashboard-picture clean

help:  ## List the commands.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# Every download is checked against requirements/*.txt's hashes (`make hashes` writes them
# from constraints.txt); the package itself is then built from here, fetching nothing.
HASHED := requirements/build.txt requirements/dev.txt requirements/image.txt

$(BIN)/.installed: pyproject.toml constraints.txt $(HASHED)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11+ is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/build.txt
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-index --no-build-isolation -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed  ## Create .venv with the operator and its dev tools.

lock: venv  ## Re-pin constraints.txt to the newest versions pyproject.toml allows, then hash.
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel -e '.[dev]'
	{ echo "# Exact versions CI and images install (pip install -c constraints.txt); \`make lock\` re-pins."; \
	  $(BIN)/pip freeze --all --exclude-editable; } > constraints.txt
	$(MAKE) hashes

# pip-compile keeps to constraints.txt and records the hash of every file of each pinned
# release (all platforms), for `pip install --require-hashes`.
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links --constraint constraints.txt

hashes: venv  ## Write requirements/*.txt: constraints.txt's pins with their hashes.
	$(PIP_COMPILE) --output-file requirements/build.txt requirements/build.in
	$(PIP_COMPILE) --output-file requirements/image.txt pyproject.toml
	$(PIP_COMPILE) --extra dev --output-file requirements/dev.txt pyproject.toml

binaries: venv  ## Build (once, cached) the control plane's and the node's binaries, kubectl, helm, promtool.
	$(BIN)/python -m controlplane build

# The Dockerfile, built with buildah (no Docker engine); as root. Installs buildah and
# mmdebstrap from Debian if missing, makes the base image from Debian packages (it cannot be
# pulled here), and caches all by content: see controlplane/image.py and docs/operations.md.
# With `make cluster` running, its node's registry then serves it as the chart and
# manifests name it (evc-operator:0.1.0).
image: venv  ## Build (once per content) the operator image (OCI archive, SBOM), load it into the running cluster's node.
	@$(BIN)/python -m controlplane image --dir $(CLUSTER_DIR)

# libfaketime (Debian's faketime): an integration test runs the operator with its clock off.
faketime:  ## Install libfaketime if it is missing (apt-get).
	@ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq faketime >/dev/null; }

cluster: venv crd.yaml  ## Start a local cluster with a real node (root; NODE=0: none); prints KUBECONFIG.
	@$(UP)

cluster-down: venv  ## Stop the local cluster, remove its state and undo its changes to the host.
	@$(BIN)/python -m controlplane down --dir $(CLUSTER_DIR)

# The Helm chart's copies of config/: its CRD, the RBAC files its templates read rules from,
# and the admission policy.
CHART := charts/evc-operator
CHART_COPIES := $(CHART)/crds/ephemeralvolumeclaims.yaml \
	$(CHART)/files/rbac/cluster_role.yaml $(CHART)/files/rbac/leader_election_role.yaml \
	$(CHART)/files/rbac/users/evc_view.yaml $(CHART)/files/rbac/users/evc_edit.yaml \
	$(CHART)/files/rbac-namespaced/role.yaml \
	$(CHART)/files/rbac-namespaced/discovery_cluster_role.yaml \
	$(CHART)/files/admission/label_size_policy.yaml \
	$(CHART)/files/signing-key/role.yaml

manifests: crd.yaml $(CHART_COPIES)  ## Regenerate crd.yaml and the Helm chart's copies from config/.

crd.yaml: config/crd/ephemeralvolumeclaims.yaml
	@{ echo "# Generated from config/crd/ephemeralvolumeclaims.yaml by 'make manifests'; edit that file."; \
	   cat $<; } > $@

$(CHART)/crds/%.yaml: config/crd/%.yaml
	@mkdir -p $(@D)
	@{ echo "# Generated from $< by 'make manifests'; edit that file."; cat $<; } > $@

$(CHART)/files/%.yaml: config/%.yaml
	@mkdir -p $(@D)
	@{ echo "# Generated from $< by 'make manifests'; edit that file."; cat $<; } > $@

# The main job: the operator in the foreground, on the configured cluster or a local one.
# On a configured cluster it first says which one, and what it will change there; from a
# terminal it asks before doing it (YES=1 does not ask).
run: venv crd.yaml  ## Run the operator (starts a local cluster if none is configured; YES=1: no question).
	@set -e; \
	if [ -n "$(NAMESPACE)" ]; then SCOPE="--namespace=$(NAMESPACE)"; WHERE="the namespace $(NAMESPACE)"; \
	else SCOPE="--all-namespaces"; WHERE="every namespace"; fi; \
	if [ -z "$$KUBECONFIG" ] && [ ! -f "$$HOME/.kube/config" ]; then \
		echo "No cluster configured (KUBECONFIG unset, no ~/.kube/config): starting a local one."; \
		$(UP) >/dev/null; \
		export KUBECONFIG="$(CURDIR)/$(CLUSTER_DIR)/kubeconfig"; KUBECTL=bin/kubectl; \
		HINT="export KUBECONFIG=$$KUBECONFIG; bin/kubectl apply -f evc.yaml -f pod.yaml"; \
		echo "Cluster: $$($$KUBECTL config view --minify -o jsonpath='{.clusters[0].cluster.server}')"; \
	else \
		KUBECTL="$$(command -v kubectl || $(BIN)/python -m controlplane build | grep '/kubectl$$')"; \
		HINT="kubectl apply -f evc.yaml"; \
		echo "Cluster: $$($$KUBECTL config view --minify -o jsonpath='{.clusters[0].cluster.server}')"; \
		echo "Context: $$($$KUBECTL config current-context) (kubeconfig: $${KUBECONFIG:-$$HOME/.kube/config})"; \
		echo "This will:"; \
		echo "  - apply crd.yaml: create or update the CustomResourceDefinition ephemeralvolumeclaims.zalando.org;"; \
		echo "  - run the operator for $$WHERE ($$SCOPE) with this context's rights: it creates a PVC"; \
		echo "    for each EphemeralVolumeClaim, and deletes claims (and so their PVCs) when they are due."; \
		if [ -t 0 ] && [ -z "$(YES)" ]; then \
			read -r -p "Go ahead? [y/N] " ANSWER; \
			case "$$ANSWER" in [yY]|[yY][eE][sS]) ;; *) echo "Nothing done."; exit 1;; esac; \
		fi; \
	fi; \
	$$KUBECTL apply -f crd.yaml; \
	for TRY in 1 2 3; do \
		$$KUBECTL wait --for condition=established --timeout=60s crd/ephemeralvolumeclaims.zalando.org && break; \
		if [ $$TRY = 3 ]; then exit 1; fi; sleep 1; \
	done; \
	echo "Running the operator ($$SCOPE); stop it with Ctrl-C. In another terminal: $$HINT"; \
	exec $(BIN)/kopf run $$SCOPE --verbose ephemeral.py

lint: venv
	$(BIN)/ruff check src controlplane tests bench monitoring ephemeral.py

typecheck: venv
	$(BIN)/mypy --strict src/evc_operator controlplane tests bench monitoring ephemeral.py

unit: venv
	$(BIN)/pytest tests/unit

integration: venv binaries faketime
	$(BIN)/pytest tests/integration

# docs/dashboard.svg: the chart's dashboard drawn from a few minutes of the operator's real
# metrics, scraped by Prometheus on a local control plane (no node, no root); see monitoring/.
dashboard-picture: venv binaries crd.yaml  ## Redraw docs/dashboard.svg from a 4-minute run (no Grafana needed).
	$(BIN)/python -m monitoring --out docs/dashboard.svg

SEED ?= 1
COUNT ?= 200
REAL ?=
faults: venv binaries  ## Run COUNT (200) randomized fault scenarios from SEED (1); REAL=1 on a real node (root); see docs/reliability.md.
	$(BIN)/python -m tests.faults --seed $(SEED) --count $(COUNT) $(if $(REAL),--real-node)

# Benchmark scale; docs/benchmarks.md has the large run (EVCS=10000 PODS=50000) and the soak.
EVCS ?= 1000
PODS ?= 10000
SOAK ?=
# JOBS=1: each claim's user is a Job, whose controller creates the pod.
JOBS ?=

bench: venv binaries crd.yaml  ## Benchmark on a local control plane (EVCS, PODS; JOBS=1: Job users; SOAK=MINUTES for the soak); see docs/benchmarks.md.
	$(BIN)/python -m bench --evcs $(EVCS) --pods $(PODS) $(if $(SOAK),--soak $(SOAK)) \
		$(if $(filter 1,$(JOBS)),--jobs)

test: venv lint typecheck binaries faketime  ## Run the whole suite: lint, types, unit and integration tests.
	$(BIN)/pytest

clean: cluster-down  ## Remove the virtualenv, local cluster state and bin/.
	rm -rf $(VENV) $(CLUSTER_DIR) bin .mypy_cache .pytest_cache .ruff_cache
