"""The built-in use cases, outside the engine; each plugs in through :class:`ddn_ray.usecase.UseCase`.

* :mod:`~ddn_ray.usecases.builtin`: the use cases ``data.name`` finds (Elec2, Fashion-MNIST, BBC News,
  CartPole / Pendulum dynamics, NAB) and the main job's feed of their streams;
* :mod:`~ddn_ray.usecases.routes`: their raw-input Serve routes (PNG, text, next state, anomaly scores);
* the data and models they use: :mod:`~ddn_ray.usecases.datasets`, :mod:`~ddn_ray.usecases.scenarios`,
  :mod:`~ddn_ray.usecases.images`, :mod:`~ddn_ray.usecases.text`, :mod:`~ddn_ray.usecases.control`,
  :mod:`~ddn_ray.usecases.nab`, :mod:`~ddn_ray.usecases.anomaly`.

Nothing in the engine or the main job imports this package; :mod:`ddn_ray.usecase` names its parts as
``"package.module:attribute"`` strings and loads them when a job asks for them.
"""
