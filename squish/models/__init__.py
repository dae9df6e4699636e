"""Models without MLX: where they live and how names resolve (store), the catalog, what fits this
machine (hardware), what is here (inventory), pulls from the hub (pull), directory checks
(verify) and the user's settings. Depends on squish.engine only for the engine's ModelRef."""
