# The papers' tables and figures, and the λ/ρ sweeps (docs/reproduce.md). Included by the Makefile.
# Every run goes through `python run.py -m ...` into deterministic folders under $(OUTPUT_DIR)/runs, so a
# second `make` skips finished runs and only rebuilds the tables and figures.

OUTPUT_DIR ?= outputs
CRT_DATA_DIR ?= ../shared/data
SEEDS ?= 0,1,2
PROFILE ?= full
# Table 1 rows: DATASETS when given on the command line (make table1 DATASETS="cifar100 arxiv"), else these.
T1_DATASETS ?= cifar100 cifar100_r001 tinyimagenet inat2019 arxiv
T1_ROWS = $(if $(filter command line environment,$(origin DATASETS)),$(DATASETS),$(T1_DATASETS))
T1_METHODS ?= erm iw focal ldam ldam_drw vat gan smote crt ecrt_1p ecrt_mp
S7_METHODS ?= erm ldam crt ecrt_mp
RUN_ARGS ?=
SWEEP_ARGS ?=
# One OpenMP/MKL thread per run unless the caller says otherwise: the models are small, and on a busy CPU
# two spinning threads per process made runs about ten times slower than one.
THREADS ?= 1
RUN_ENV = OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS)
RUNPY = $(RUN_ENV) $(PY) run.py -m paths.output_dir=$(OUTPUT_DIR) paths.data_dir=$(CRT_DATA_DIR)
TABLES = $(RUN_ENV) $(PY) scripts/make_tables.py --output-dir $(OUTPUT_DIR) --data-dir $(CRT_DATA_DIR) --seeds $(SEEDS)
EXTRA = $(if $(strip $(RUN_ARGS)),--extra $(RUN_ARGS))

LT_METHODS ?= erm ldam_drw logit_adjust logit_adjust_posthoc balanced_softmax decoupled_crt decoupled_lws decoupled_tau_norm ecrt_mp ecrt_mp_la ecrt_mp_bs

.PHONY: table1 table-s1 table-s7 table-lt table-lt-small tables figure-runs efficiency figures sweep-lam sweep-rho sweep-lam-rho sweep-optuna

table1: install ## Table 1: DATASETS x T1_METHODS x SEEDS as multiruns, then outputs/tables/table1.{md,tex,csv}; PROFILE=smoke: toy stand-in
	$(TABLES) table1 --run --profile $(PROFILE) --datasets "$(T1_ROWS)" --methods "$(T1_METHODS)" $(EXTRA)

table-s1: install ## CRT Table S1 (extreme classification toy): ERM, CRT w/o aug, CRT x SEEDS, then outputs/tables/table_s1.*
	$(TABLES) table-s1 --run $(EXTRA)

table-s7: install ## CRT Table S7 (MNIST, 1 and 5 minority digits): S7_METHODS x SEEDS, then outputs/tables/table_s7.*
	$(TABLES) table-s7 --run --methods "$(S7_METHODS)" $(EXTRA)

table-lt: install ## CIFAR-10/100-LT (IF 100/50/10, ResNet-32, LDAM-DRW recipe) x LT_METHODS x SEEDS beside published numbers; PROFILE=smoke: synthetic images
	$(TABLES) table-lt --run --profile $(PROFILE) --methods "$(LT_METHODS)" $(EXTRA)

table-lt-small: install ## long-tail baselines vs ERM/LDAM-DRW/ECRT-MP, alone and composed, on both toys and both MNIST protocols x SEEDS (docs/longtail.md)
	$(TABLES) table-lt-small --run $(EXTRA)

tables: install ## rebuild every table from the results.json files on disk (runs nothing)
	$(PY) scripts/make_tables.py all --output-dir $(OUTPUT_DIR) --seeds $(SEEDS)

figure-runs: install efficiency ## the toy runs behind the figures: λ sweep, ρ sweep, refine on features vs sources, the efficiency grid
	$(RUNPY) sweep=lam seed=$(SEEDS) $(RUN_ARGS)
	$(RUNPY) sweep=rho seed=0 $(RUN_ARGS)
	$(RUNPY) method.refine_space=feature,source seed=$(SEEDS) $(RUN_ARGS)

# The efficiency grid (ECRT fig. 9 / CRT fig. 11) runs in one process, its cells under $(OUTPUT_DIR)/efficiency/.
EFFICIENCY = $(RUN_ENV) $(PY) scripts/efficiency.py --output-dir $(OUTPUT_DIR) --data-dir $(CRT_DATA_DIR)
efficiency: install ## learning-efficiency grid on the Hénon toy (n x N x 4 variants x 3 replicates, in-process) -> outputs/efficiency/efficiency.{csv,md}
	$(EFFICIENCY) --profile $(PROFILE)

ifeq ($(PROFILE),smoke)
# Smoke: the same runs at debug=tiny sizes, seed 0 only, and the efficiency grid's smoke profile (a few minutes
# on a CPU); every figure is marked SMOKE.
figures: install
	$(RUNPY) sweep=lam method.lam=1e-4,1e-3,1e-1 seed=0 debug=tiny $(RUN_ARGS)
	$(RUNPY) sweep=rho method.rho=0,1e-2,1 seed=0 debug=tiny $(RUN_ARGS)
	$(RUNPY) method.refine_space=feature,source seed=0 debug=tiny $(RUN_ARGS)
	$(RUN_ENV) $(PY) scripts/make_tables.py table-s1 --run --output-dir $(OUTPUT_DIR) --data-dir $(CRT_DATA_DIR) --seeds 0 --extra debug=tiny $(RUN_ARGS)
	$(EFFICIENCY) --profile smoke
	$(RUN_ENV) $(PY) scripts/make_figures.py --output-dir $(OUTPUT_DIR) --smoke debug=tiny
else
figures: figure-runs table-s1 ## every figure as PNG and PDF under outputs/figures (runs what is missing first); PROFILE=smoke: tiny runs, marked SMOKE
	$(RUN_ENV) $(PY) scripts/make_figures.py --output-dir $(OUTPUT_DIR)
endif

sweep-lam: install ## λ sweep (configs/sweep/lam.yaml) x SEEDS; SWEEP_ARGS="experiment=..." picks the setting (default: toy)
	$(RUNPY) sweep=lam seed=$(SEEDS) $(SWEEP_ARGS)

sweep-rho: install ## ρ sweep (configs/sweep/rho.yaml) x SEEDS; SWEEP_ARGS as for sweep-lam
	$(RUNPY) sweep=rho seed=$(SEEDS) $(SWEEP_ARGS)

sweep-lam-rho: install ## λ x ρ grid (configs/sweep/lam_rho.yaml) x SEEDS; SWEEP_ARGS as for sweep-lam
	$(RUNPY) sweep=lam_rho seed=$(SEEDS) $(SWEEP_ARGS)

sweep-optuna: install ## Optuna search over λ and ρ (needs: pip install -e ".[optuna]"); SWEEP_ARGS as for sweep-lam
	$(RUNPY) sweep=optuna $(SWEEP_ARGS)
