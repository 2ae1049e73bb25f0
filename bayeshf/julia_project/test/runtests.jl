# Tests of the Julia half of the bridge. Run from the repository root:
#     julia --project=bayeshf/julia_project -e 'using Pkg; Pkg.instantiate(); Pkg.test()'
# reference.json holds pyhf's answers (bayeshf/julia_project/test/make_reference.py).

using Test
using BayesHFBridge
using Distributions
using ForwardDiff
using JSON3
using LiteHF: load_pyhfjson, build_pyhf, prior_names

const HERE = @__DIR__
const REF = JSON3.read(read(joinpath(HERE, "reference.json"), String))

@testset "BayesHFBridge" begin

@testset "prior expressions" begin
    d = parse_prior("truncated(Gamma(26.0, 1 / 25.0), 1e-10, 10.0)")
    @test logpdf(d, 1.1) ≈ logpdf(truncated(Gamma(26.0, 1 / 25.0), 1e-10, 10.0), 1.1)
    @test mean(parse_prior("Gamma(3.0, 1 / 4.0)")) ≈ 3.0 / 4.0        # shape, *scale* = 1/rate
    @test logpdf(parse_prior("truncated(Normal(0.0, 1.0), -5.0, Inf)"), 6.0) ≈ logpdf(Normal(), 6.0) - log(ccdf(Normal(), -5.0))
    @test_throws ArgumentError parse_prior("1 + 1")
    @test_throws ArgumentError parse_prior("Base.run(`true`)")
    @test_throws ArgumentError parse_prior("Normal(0.0, 1.0).μ")
    prior = build_prior(("truncated(Normal(0.0, 1.0), -5.0, 5.0)", "Uniform(0.0, 10.0)"))
    @test length(prior) == 2
    @test logpdf(prior, [0.5, 2.0]) ≈ logpdf(truncated(Normal(), -5.0, 5.0), 0.5) + log(0.1)
end

@testset "embedding of free parameters" begin
    e = BayesHFBridge.Embedding([1.0, 7.0, 3.0], [1, 3])
    @test e([0.5, 0.25]) == [0.5, 7.0, 0.25]
    @test ForwardDiff.gradient(x -> sum(abs2, e(x)), [0.5, 0.25]) ≈ [1.0, 0.5]
end

@testset "LiteHF main likelihood == pyhf ($(case.path))" for case in REF.workspaces
    path = joinpath(HERE, case.path)
    @test Set(litehf_parameter_names(path)) == Set(String.(case.litehf_names))
    # the order LiteHF's expected() reads is build_pyhf's, from the same Dict (not prior_names)
    raw = load_pyhfjson(path)
    order = litehf_input_names(raw)
    @test order == litehf_input_names(raw)
    @test Set(order) == Set(String.(collect(prior_names(build_pyhf(raw)))))
    loglikelihood = litehf_loglikelihood(path, Tuple(String.(case.litehf_names)))
    for (theta, expected) in zip(case.points, case.main_logpdf)
        @test loglikelihood_at(loglikelihood, collect(Float64, theta)) ≈ expected rtol = 1e-10
    end
    names = String.(collect(case.litehf_names))
    @test_throws ArgumentError litehf_loglikelihood(path, ("nonsense", names[2:end]...))
end

@testset "callback log-density with ForwardDiff" begin
    calls = Ref(0)
    f(theta) = -0.5 * sum(abs2, theta .- 1.0)
    g(theta) = (calls[] += 1; (f(theta), -(theta .- 1.0)))
    callback = callback_loglikelihood(f, g)
    @test callback.thread === nothing       # a Julia function may be called from any thread
    pinned = callback_loglikelihood(f, g; thread = Threads.threadid())
    @test pinned(zeros(3)) ≈ f(zeros(3))
    elsewhere = callback_loglikelihood(f, g; thread = Threads.threadid() + 1)   # as if called off the GIL thread
    @test_throws ErrorException elsewhere(zeros(3))
    x = [0.3, -0.2, 2.0, 0.7, 1.1, -3.0, 0.0, 0.4, 2.2, 1.0, 0.9, 5.0, -1.0]   # > one ForwardDiff chunk
    @test callback(x) ≈ f(x)
    @test ForwardDiff.gradient(y -> 2 * callback(y) + sum(y), x) ≈ 2 .* (1.0 .- x) .+ 1
    @test calls[] == 1            # all chunks answered from one call
    ForwardDiff.gradient(callback, x .+ 0.1)
    @test calls[] == 2
end

@testset "BAT sampling ($sampler, $likelihood)" for sampler in ("mh", "hmc"), likelihood in ("litehf", "callback")
    case = REF.posterior
    path = joinpath(HERE, case.path)
    names = Tuple(String.(case.litehf_names))
    loglikelihood = if likelihood == "litehf"
        litehf_loglikelihood(path, names)
    else
        litehf = litehf_loglikelihood(path, names)
        callback_loglikelihood(litehf, theta -> (litehf(theta), ForwardDiff.gradient(litehf, theta)))
    end
    v, logd, weight, chainid, stepno = sample_posterior(loglikelihood, Tuple(String.(case.prior_expressions)),
                                                        collect(Float64, case.template), collect(Int, case.free),
                                                        sampler, 2, 5000, 7)
    @test size(v) == (length(logd), length(case.template))
    @test all(isfinite, logd)
    @test all(>(0), weight)
    sampler == "mh" && @test all(isinteger, weight)
    @test length(unique(chainid)) == 2
    # BAT's next_cycle! sets the current sample's stepno to 0, and that sample is
    # output when the chain's first proposal is rejected: 0 is a valid step number
    @test all(>=(0), stepno)
    @test all(stepno .<= 5000)
    w = weight ./ sum(weight)
    mu = v[:, 1]
    mean_mu = sum(w .* mu)
    # BAT vs bayeshf's NUTS (reference.json): generous 10 % of the posterior sd
    @test abs(mean_mu - case.mu_mean) < 0.1 * case.mu_sd
end

end
