"""The `ranking` eval suite: top-k recommendation on a MovieLens-format dataset, Attune's hybrid
against fairly tuned baselines.

Where things are: `suite` (the kind and its report), `baselines` (computed directly),
`attune_retrieval` (Attune's Qdrant path), `tuning` (grids on the validation split), `metrics`
(recall, NDCG, MRR). The dataset loader and the baselines' models are `evals.movielens` and
`evals.recommenders`.
"""
