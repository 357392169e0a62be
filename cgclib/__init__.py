"""cgclib: the library behind the CGC research companion.

Everything a chapter notebook computes lives here, one module per concept, so that the
notebooks stay thin (parameters, calls, a plot, glue, ledger records) and every computation
is unit tested. The modules, by what they are about:

Models and their parts
    `models` (loading a test bed, a local folder or a hub model), `components` (layers, heads
    and linear layers of both families), `hooks` (forward hooks, always removed), `devices`
    (models split over devices), `resume` (evaluating variants from one block on), `tokens`
    (which positions a statistic counts), `subjects` (a model with its data).
The test bed
    `suite` (the seven capabilities), `grammar` (the background language), `testbed`
    (training the two small models).
Measuring a model
    `evaluation` (perplexity and per-capability accuracy), `ablation` (removing one head).
Signals of importance and structure
    `saes` (one SAE per head), `batched_topk` (the SAEs of all heads trained at once),
    `density` and `density_map` (capability density), `redundancy` (the density theory),
    `importance` (Wanda, magnitude, Taylor, ...),
    `moments` and `subspaces` (streamed second moments, CCA, variance vs prediction),
    `linear_blocks` (blocks as linear maps), `early_exit` (settled tokens), `absorption`
    (how perturbations travel).
Compression
    `allocation` (a global budget over blocks), `pruning` (Wanda masks), `quantization`,
    `second_order` (SparseGPT and GPTQ), `low_rank` (SVD and ASVD), `compression` (every
    operator on a whole model, and its curves), `phase` and `component_phase`
    (phase-transition fits of whole models and single heads).
Evidence
    `stats` (intervals, permutation tests, power), `verdicts` (rules that judge a claim),
    `ledger` (the claims ledger), `paper_values` (the papers' numbers).
Plumbing
    `paths`, `storage` (atomic writes, computed-once caches), `plots` (the book's figure style),
    `estimate` (what a chapter run will cost, from the model's config alone).
The book's own machinery
    `cgclib.book`: the chapter runner and `cgc` command line, parallel execution, sweeps,
    the Sphinx extensions and the benchmarks. No science module imports from it.
"""

__version__ = "0.1.0"
