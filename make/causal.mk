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

# Where does ECRT help? (reduced version of issue 10 item 4: the synthetic regimes; MNIST rows come from the
# table-s7 runs). ERM, ECRT-MP and its controls (oversampling instead of the per-dimension shuffle, no
# augmentation, refine on features) x SEEDS, then one table of everything under $(OUTPUT_DIR)/runs.
REGIME_DATA ?= toy_henon toy_ica
.PHONY: ecrt-regimes ecrt-regimes-table
ecrt-regimes: install ## ERM / ECRT-MP / controls on REGIME_DATA x SEEDS, then ecrt-regimes-table
	@for ds in $(REGIME_DATA); do \
	  $(RUNPY) data=$$ds method=erm,ecrt_mp seed=$(SEEDS) progress=false skip_completed=true $(RUN_ARGS) || exit 1; \
	  $(RUNPY) data=$$ds method=ecrt_mp method.augment=oversample,none seed=$(SEEDS) progress=false skip_completed=true $(RUN_ARGS) || exit 1; \
	  $(RUNPY) data=$$ds method=ecrt_mp method.refine_space=feature seed=$(SEEDS) progress=false skip_completed=true $(RUN_ARGS) || exit 1; \
	done
	$(MAKE) ecrt-regimes-table

ecrt-regimes-table: ## the where-ECRT-helps table from the runs on disk: $(OUTPUT_DIR)/tables/ecrt_regimes.md
	$(RUN_ENV) $(PY) scripts/ecrt_regimes.py --runs $(OUTPUT_DIR)/runs --out $(OUTPUT_DIR)/tables
