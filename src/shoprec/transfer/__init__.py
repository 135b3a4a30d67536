"""Transfer learning: across domains (markets, categories), to new items from their content,
and to new users. Each submodule is a few explicit steps over the multi-task core; import
them directly (``from shoprec.transfer import cross_domain``)."""
