# Does demix recover the sources? (issue 10; docs/where_ecrt_helps.md). Included by the Makefile.
# Ground-truth benchmark: every run on a synthetic dataset writes diagnostics (MCC of s and z against the true
# sources, within-class dependence, augmentation MMD) into results.json; demix-report tabulates them and draws
# MCC of s over demix epochs. DEMIX_VARIANTS: one run.py override string per variant ('-' = the default).

comma := ,
DEMIX_OUT ?= outputs/demix
DEMIX_DATASETS ?= toy_henon_identity toy_ica   # identity encoders: pretrain is 1 epoch here, refine 1 (only demix is scored)
DEMIX_SEEDS ?= 0
DEMIX_EPOCHS ?= 200
# '-' is the paper's ECRT-MP demix (FDV, cosine-normalised critic, rho = 1e-2); the second and third are the
# variant that recovers the sources (unnormalised additive critic, rho = 1, all 200 epochs, 4 or 8 MADE blocks;
# MCC >= 0.9 on both toys in docs/where_ecrt_helps.md), the last CRT's GCL. '+' joins overrides of one variant.
DEMIX_IDENT = stage.demix.critic.normalize=false+method.rho=1.0+stage.demix.patience=null
DEMIX_VARIANTS ?= - $(DEMIX_IDENT) $(DEMIX_IDENT)+stage.demix.flow.blocks=8 method.loss=gcl
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

# Where does ECRT help? (issue 10 item 4; docs/where_ecrt_helps.md). Every REGIME (one run.py override string,
# '+' between overrides) x the methods and controls below x SEEDS, then one table of everything under
# $(OUTPUT_DIR)/runs. Methods: ERM, IW, LDAM-DRW, CRT, ECRT-1P, ECRT-MP, ECRT-MP + LDAM. Controls of ECRT-MP:
# oversampling instead of the per-dimension shuffle, no augmentation, refine on features, the encoder
# pretrained on all classes vs the majority only (one of the two is the regime's default).
REGIMES ?= data=toy_henon data=toy_ica experiment=regime_mnist_2pct experiment=regime_mnist_step experiment=regime_mnist_exp
REGIME_METHODS ?= erm,iw,ldam_drw,crt,ecrt_1p,ecrt_mp,ecrt_mp_ldam
.PHONY: ecrt-regimes ecrt-regimes-table
ecrt-regimes: install ## methods and ECRT-MP controls on REGIMES x SEEDS, then ecrt-regimes-table
	@for r in $(REGIMES); do ov=$$(echo "$$r" | tr '+' ' '); \
	  $(RUNPY) $$ov method=$(REGIME_METHODS) seed=$(SEEDS) progress=false skip_completed=true $(RUN_ARGS) || exit 1; \
	  $(RUNPY) $$ov method=ecrt_mp method.augment=oversample,none seed=$(SEEDS) progress=false skip_completed=true $(RUN_ARGS) || exit 1; \
	  $(RUNPY) $$ov method=ecrt_mp method.refine_space=feature seed=$(SEEDS) progress=false skip_completed=true $(RUN_ARGS) || exit 1; \
	  $(RUNPY) $$ov method=ecrt_mp method.pretrain_classes=all,majority seed=$(SEEDS) progress=false skip_completed=true $(RUN_ARGS) || exit 1; \
	done
	$(MAKE) ecrt-regimes-table

ecrt-regimes-table: ## the where-ECRT-helps table from the runs on disk: $(OUTPUT_DIR)/tables/ecrt_regimes.md
	$(RUN_ENV) $(PY) scripts/ecrt_regimes.py --runs $(OUTPUT_DIR)/runs --out $(OUTPUT_DIR)/tables
