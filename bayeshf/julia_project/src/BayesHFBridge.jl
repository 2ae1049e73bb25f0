"""
    BayesHFBridge

The Julia half of bayeshf's bridge to BAT.jl (v4 API). Python (bayeshf.julia)
hands over:

- a log-likelihood: LiteHF.jl's `pyhf_loglikelihoodof` (main Poisson term only,
  no constraint terms) built from a workspace file, or a Python callable
  returning (value, gradient) of the JAX log-likelihood;
- one Distributions.jl expression per free parameter (the bayeshf priors);
- the full parameter template (fixed parameters at their values) and the
  1-based indices of the free parameters;

and gets back flat arrays of BAT's samples: (v, logd, weight, chainid, stepno).

The posterior is `PosteriorMeasure(likelihood, prior)` where the likelihood
never contains a constraint term: every constraint of the HistFactory model
enters exactly once, as a bayeshf prior (see docs/julia.md).
"""
module BayesHFBridge

using BAT
using DensityInterface: logfuncdensity, logdensityof
using Distributions
using ForwardDiff
using LiteHF: load_pyhfjson, build_pyhf, pyhf_loglikelihoodof, expected, observed, prior_names
using Random123: Philox4x
import AdvancedHMC  # loads BAT's HamiltonianMC extension

export parse_prior, build_prior, litehf_loglikelihood, callback_loglikelihood, sample_posterior,
       loglikelihood_at, litehf_parameter_names

# ----------------------------------------------------------------------------- priors

"""
Module in which prior expressions are evaluated: only Distributions.jl names.
Python validates each expression against its grammar (bayeshf/julia/expressions.py)
before it is sent here.
"""
module PriorSandbox
using Distributions: Normal, LogNormal, Gamma, Uniform, Cauchy, Dirac, truncated
end

const _ALLOWED_CALLS = (:Normal, :LogNormal, :Gamma, :Uniform, :Cauchy, :Dirac, :truncated, :/, :-)

# the grammar bayeshf/julia/expressions.py writes: constructor calls, numbers, Inf, unary minus, division
_allowed(x::Real) = true
_allowed(x::Symbol) = x === :Inf
_allowed(x::Expr) = x.head === :call && x.args[1] in _ALLOWED_CALLS && all(_allowed, x.args[2:end])
_allowed(x) = false

"""
    parse_prior(expression) -> UnivariateDistribution

Evaluate one prior expression such as `"truncated(Gamma(26.0, 1 / 25.0), 1e-10, 10.0)"`;
anything outside the grammar bayeshf writes is refused before evaluation.
"""
function parse_prior(expression::AbstractString)
    parsed = Meta.parse(String(expression))
    _allowed(parsed) || throw(ArgumentError("prior expression $(repr(expression)) is outside the bridge's grammar"))
    d = Core.eval(PriorSandbox, parsed)
    d isa UnivariateDistribution || throw(ArgumentError("prior expression $(repr(expression)) is not a univariate distribution"))
    return d
end

"""
    build_prior(expressions) -> distribution over the free-parameter vector

The product of the per-parameter priors (`distprod` of a vector, i.e.
`Distributions.product_distribution`), in bayeshf's parameter order.
"""
build_prior(expressions) = distprod([parse_prior(e) for e in collect(String, expressions)])

# ----------------------------------------------------------------------------- embedding

"""Full parameter vectors from free ones: fixed parameters stay at their template values."""
struct Embedding
    template::Vector{Float64}
    free::Vector{Int}
end

function (e::Embedding)(x::AbstractVector{T}) where {T<:Real}
    theta = Vector{T}(undef, length(e.template))
    theta .= e.template
    theta[e.free] .= x
    return theta
end

# ----------------------------------------------------------------------------- LiteHF likelihood

"""
    litehf_input_names(raw) -> Vector{String}

The names of the vector LiteHF's `expected(model)` reads, in the order it reads
them, for `raw = load_pyhfjson(path)`: `build_pyhf(raw)`'s `global_unique`,
the modifier names of every sample in the order `build_pyhf` iterates the
channel and sample `Dict`s. That order depends on string hashes;
`prior_names(model)` is *not* it (`sortpoi!` moves the POI to the front of the
names only). Pure function of `raw`: iterating the same `Dict` twice gives the
same order. Python mirror: `bayeshf.julia.litehf.litehf_input_order`.
"""
function litehf_input_names(raw)
    names = Symbol[]
    for (channel_name, channel) in raw
        channel_name == "misc" && continue
        for (_, counts) in channel
            append!(names, counts.modifier_names)
        end
    end
    return String.(unique(names))
end

"""
    litehf_parameter_names(path) -> Vector{String}

LiteHF's input order for the workspace at `path` (see `litehf_input_names`).
"""
litehf_parameter_names(path::AbstractString) = litehf_input_names(load_pyhfjson(String(path)))

"""
    litehf_loglikelihood(path, names) -> theta -> log L_main(theta)

LiteHF.jl's main Poisson log-likelihood (`pyhf_loglikelihoodof`: no
constraint terms) of the workspace at `path`, as a function of the full
parameter vector in bayeshf's order; `names[i]` is LiteHF's name of bayeshf
parameter `i` (computed in Python, bayeshf/julia/litehf.py). The vector handed
to LiteHF is ordered by `litehf_input_names` of the very `Dict` the model is
built from; Python then compares the result with bayeshf's log-likelihood at
a few points before sampling (bayeshf/julia/sampling.py).
"""
function litehf_loglikelihood(path::AbstractString, names)
    raw = load_pyhfjson(String(path))
    model = build_pyhf(raw)
    ours = collect(String, names)
    theirs = litehf_input_names(raw)
    Set(theirs) == Set(String.(collect(prior_names(model)))) ||
        throw(ArgumentError("LiteHF's input names differ from its prior names; the bridge does not know this LiteHF version"))
    permutation = Int[]
    for name in theirs
        i = findfirst(==(name), ours)
        i === nothing && throw(ArgumentError("LiteHF parameter $name has no bayeshf counterpart (bayeshf names: $(join(ours, ", ")))"))
        push!(permutation, i)
    end
    missing_names = setdiff(ours, theirs)
    isempty(missing_names) || throw(ArgumentError("bayeshf parameters $(join(missing_names, ", ")) are unknown to LiteHF"))
    main = pyhf_loglikelihoodof(expected(model), observed(model))
    return theta -> main(theta[permutation])
end

# ----------------------------------------------------------------------------- callback likelihood

"""
    CallbackLogDensity(value, value_and_gradient, thread)

A log-likelihood computed elsewhere (bayeshf's jitted JAX function, called
through PythonCall). `value(theta)::Float64`, `value_and_gradient(theta)::
Tuple{Float64, Vector{Float64}}`. ForwardDiff `Dual` inputs are answered with
the supplied gradient (chain rule on the partials), so BAT's HMC differentiates
through BAT's own transformations with ForwardDiff and through the callback
with JAX; the last gradient is cached, so ForwardDiff's chunks cost one call.
`thread`: the only Julia thread allowed to call (the one holding Python's GIL,
for Python functions), or `nothing` for Julia functions callable from any thread.
"""
mutable struct CallbackLogDensity{F,G}
    value::F
    value_and_gradient::G
    thread::Union{Nothing,Int}
    last_x::Vector{Float64}
    last_value::Float64
    last_gradient::Vector{Float64}
    ncalls::Int
    lock::ReentrantLock
end

CallbackLogDensity(value, value_and_gradient, thread=nothing) =
    CallbackLogDensity(value, value_and_gradient, thread, Float64[], NaN, Float64[], 0, ReentrantLock())

"""
    callback_loglikelihood(value, value_and_gradient; thread=nothing)

Python passes `thread = Threads.threadid()` (PythonCall may only be used from
the thread holding Python's GIL); Julia functions need no thread.
"""
callback_loglikelihood(value, value_and_gradient; thread=nothing) =
    CallbackLogDensity(value, value_and_gradient, thread)

# BAT runs each chain as a task (Threads.@spawn): with several threads (Julia >= 1.12 adds an
# interactive one by default) a Python callback would be called from a thread without the GIL
function _check_thread(c::CallbackLogDensity)
    c.thread === nothing || Threads.threadid() == c.thread ||
        error("the Python log-density callback was called from Julia thread $(Threads.threadid()), not " *
              "$(c.thread); start Julia with one thread (PYTHON_JULIACALL_THREADS=1)")
end

function (c::CallbackLogDensity)(theta::AbstractVector{<:Real})
    _check_thread(c)
    lock(c.lock) do
        c.ncalls += 1
        Float64(c.value(Vector{Float64}(theta)))
    end
end

function _cached_value_and_gradient(c::CallbackLogDensity, x::Vector{Float64})
    _check_thread(c)
    lock(c.lock) do
        if x != c.last_x
            value, gradient = c.value_and_gradient(x)
            c.ncalls += 1
            c.last_x, c.last_value, c.last_gradient = copy(x), Float64(value), Vector{Float64}(gradient)
        end
        (c.last_value, c.last_gradient)
    end
end

function (c::CallbackLogDensity)(theta::AbstractVector{<:ForwardDiff.Dual{T}}) where {T}
    x = Vector{Float64}(ForwardDiff.value.(theta))
    value, gradient = _cached_value_and_gradient(c, x)
    partials = mapreduce((g, d) -> g * ForwardDiff.partials(d), +, gradient, theta)
    return ForwardDiff.Dual{T}(value, partials)
end

"""Evaluate any of the log-likelihoods above at a full parameter vector (for tests)."""
loglikelihood_at(loglikelihood, theta) = Float64(ForwardDiff.value(loglikelihood(collect(Float64, theta))))

# ----------------------------------------------------------------------------- sampling

function _proposal(sampler::AbstractString)
    sampler == "mh" && return RandomWalk()
    sampler == "hmc" && return HamiltonianMC()
    throw(ArgumentError("sampler must be \"mh\" or \"hmc\", got $(repr(sampler))"))
end

"""
    sample_posterior(loglikelihood, prior_expressions, template, free, sampler, nchains, nsteps, seed)
        -> (v, logd, weight, chainid, stepno)

Sample `PosteriorMeasure(logfuncdensity(loglikelihood ∘ embedding), build_prior(prior_expressions))`
with `TransformedMCMC(proposal = RandomWalk() | HamiltonianMC(), nchains, nsteps)`
and a Philox4x RNG seeded with `seed` (ForwardDiff as BAT's AD backend).
Returns `v` as an (nsamples, npars) matrix of full parameter vectors.
"""
function sample_posterior(loglikelihood, prior_expressions, template, free, sampler::AbstractString,
                          nchains::Integer, nsteps::Integer, seed::Integer)
    embedding = Embedding(collect(Float64, template), collect(Int, free))
    prior = build_prior(prior_expressions)
    likelihood = logfuncdensity(x -> loglikelihood(embedding(x)))
    posterior = PosteriorMeasure(likelihood, prior)
    context = BATContext(rng = Philox4x((UInt64(seed), UInt64(0))), ad = ForwardDiff)
    convergence = nchains > 1 ? BrooksGelmanConvergence() : AssumeConvergence()
    algorithm = TransformedMCMC(proposal = _proposal(sampler), nchains = Int(nchains), nsteps = Int(nsteps),
                                convergence = convergence, strict = false)
    samples = bat_sample(posterior, algorithm, context).result
    free_values = reduce(vcat, [permutedims(collect(Float64, x)) for x in samples.v])
    v = repeat(permutedims(embedding.template), length(samples), 1)
    v[:, embedding.free] .= free_values
    return (v, collect(Float64, samples.logd), collect(Float64, samples.weight),
            collect(Int, samples.info.chainid), collect(Int, samples.info.stepno))
end

end # module
