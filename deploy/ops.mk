# Operations targets (included by the top-level Makefile: `include deploy/ops.mk`).
# Tools go to a cache outside git ($(METAREC_CACHE)/bin); every install target is idempotent and
# returns at once when the pinned tool is already there.

METAREC_CACHE ?= $(HOME)/.cache/metarec
OPS_BIN := $(METAREC_CACHE)/bin
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := $(OPS_BIN)/kustomize
OPS_PYTHON ?= .venv/bin/python
K8S_OVERLAYS := dev prod

.PHONY: ops-tools prometheus-install kustomize-install prometheus-check k8s-render k8s-validate deploy-test compose-config prometheus-live-test

ops-tools: prometheus-install kustomize-install ## install promtool (apt) and kustomize (Go module proxy) for the deploy tests
	@echo "ops-tools: promtool $$(promtool --version 2>&1 | sed -n '1s/^promtool, version \([^ ]*\).*/\1/p'), kustomize $$($(KUSTOMIZE) version)"

prometheus-install: ## install prometheus + promtool from Debian's package when missing
	@bash deploy/prometheus/install.sh

kustomize-install: ## build the pinned kustomize into $(METAREC_CACHE)/bin (needs Go)
	@if [ "$$($(KUSTOMIZE) version 2>/dev/null)" != "$(KUSTOMIZE_VERSION)" ]; then \
	  command -v go >/dev/null 2>&1 || { echo "kustomize-install: Go is required (go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION))" >&2; exit 1; }; \
	  mkdir -p $(OPS_BIN) && GOBIN=$(OPS_BIN) GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) \
	    || { echo "kustomize-install: go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) failed" >&2; exit 1; }; \
	fi

prometheus-check: prometheus-install ## promtool: check the config and rules, run the alert unit tests
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/tests/alerts_test.yml

prometheus-live-test: venv prometheus-install ## a real Prometheus scrapes a live worker: every dashboard/rule expression returns series
	$(OPS_PYTHON) -m pytest tests/ops/test_prometheus_live.py -q -m prometheus

k8s-render: kustomize-install ## render every overlay to .state/k8s/<overlay>.yaml
	@mkdir -p .state/k8s
	@for o in $(K8S_OVERLAYS); do $(KUSTOMIZE) build k8s/overlays/$$o > .state/k8s/$$o.yaml && echo "k8s-render: .state/k8s/$$o.yaml"; done

k8s-validate: kustomize-install ## render the overlays and validate every object offline (k8s + CRD schemas)
	METAREC_KUSTOMIZE=$(KUSTOMIZE) $(OPS_PYTHON) -m pytest tests/deploy/test_deploy_k8s.py -q

deploy-test: ops-tools ## all deploy tests: compose, Dockerfile, promtool, dashboard, k8s
	METAREC_KUSTOMIZE=$(KUSTOMIZE) $(OPS_PYTHON) -m pytest tests/deploy -q -m deploy
