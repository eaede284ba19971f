# Does demix recover the sources? (issue 10; docs/where_ecrt_helps.md). Included by the Makefile.
# Ground-truth benchmark: every run on a synthetic dataset writes diagnostics (MCC of s and z against the true
# sources, within-class dependence, augmentation MMD) into results.json; demix-report tabulates them and draws
# MCC of s over demix epochs. DEMIX_VARIANTS: one run.py override string per variant ('-' = the default).

comma := ,
DEMIX_OUT ?= outputs/demix
DEMIX_DATASETS ?= toy_henon_identity toy_ica toy_henon
DEMIX_SEEDS ?= 0
DEMIX_EPOCHS ?= 20
DEMIX_VARIANTS ?= - stage.demix.critic.normalize=false method.rho=1.0 method.loss=gcl
DEMIX_ENV = OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS)

.PHONY: demix-benchmark demix-report

demix-benchmark: install ## demix variants on the ground-truth toys (DEMIX_DATASETS x DEMIX_VARIANTS x DEMIX_SEEDS), then demix-report
	@for ds in $(DEMIX_DATASETS); do for v in $(DEMIX_VARIANTS); do for s in $(subst $(comma), ,$(DEMIX_SEEDS)); do \
	  ov=$$(test "$$v" = - && echo "" || echo "$$v" | tr '+' ' '); \
	  echo "run: data=$$ds seed=$$s $$ov"; \
	  $(DEMIX_ENV) $(PY) run.py data=$$ds method=ecrt_mp seed=$$s stage.pretrain.epochs=1 stage.demix.epochs=$(DEMIX_EPOCHS) \
	    stage.refine.epochs=1 paths.output_dir=$(DEMIX_OUT) paths.data_dir=$(CRT_DATA_DIR) progress=false logger=none \
	    skip_completed=true $$ov > /dev/null || exit 1; \
	done; done; done
	$(MAKE) demix-report

demix-report: ## table (outputs/demix/demix_mcc.md) and figure (demix_mcc_by_epoch.png) from the runs on disk
	$(DEMIX_ENV) $(PY) scripts/demix_report.py --runs $(DEMIX_OUT)/runs --out $(DEMIX_OUT)
