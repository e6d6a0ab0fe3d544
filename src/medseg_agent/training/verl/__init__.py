"""Stage 2 on verl: tools, agent loop, reward entry point, RL rows and configs.

Modules that import verl (``tools``, ``agent_loop``) are imported only where verl is installed;
``episodes``, ``reward_fn`` and ``dataset`` need only medseg-agent, so RL data and rewards can be
prepared on machines without verl.
"""
