# lme4 1.1-31 references for the lme4 users' features of ig.lmm (tests/test_lmm_features.py),
# written to lme4_features.json:
#  * "condvar": ranef(fm1, condVar = TRUE) postVar (2 x 2 per Subject) and modes, sleepstudy
#    Reaction ~ Days + (Days | Subject) (REML);
#  * "anova": anova(fm0, fm1) and anova(fm2, fm1) (REML fits: lme4 refits both by ML) and an
#    anova of ML fits, with Df, AIC, BIC, logLik, deviance, Chisq, Chi Df, Pr(>Chisq);
#  * "predict": predict(newdata, re.form = NULL / NA / ~(1|Subject) / ~(0 + Days|Subject),
#    allow.new.levels = TRUE) for Reaction ~ Days + (1|Subject) + (0 + Days|Subject), and
#    Penicillin re.form = ~(1|plate);
#  * "nested": names(ranef), rownames and modes for y ~ x + (1 | a/b) on lmm_toy.csv.
#   cd tests/data && Rscript make_lme4_features.R > lme4_features.json
suppressMessages({library(lme4); library(jsonlite)})
ss <- read.csv("sleepstudy.csv"); ss$Subject <- factor(ss$Subject)
pen <- read.csv("Penicillin.csv")
toy <- read.csv("lmm_toy.csv"); toy$a <- factor(toy$a); toy$b <- factor(toy$b)
out <- list()

fm1 <- lmer(Reaction ~ Days + (Days | Subject), ss)
re <- ranef(fm1, condVar = TRUE)$Subject
pv <- attr(re, "postVar")
out$condvar <- list(levels = rownames(re), intercept = re[, 1], days = re[, 2],
                    var_intercept = pv[1, 1, ], var_days = pv[2, 2, ], cov = pv[2, 1, ])

tab <- function(a) {
  d <- as.data.frame(a)
  list(models = rownames(d), npar = d$npar, AIC = d$AIC, BIC = d$BIC, logLik = d$logLik,
       deviance = d[["deviance"]], Chisq = d$Chisq, Df = d$Df, p = d[["Pr(>Chisq)"]])
}
fm0 <- lmer(Reaction ~ Days + (1 | Subject), ss)
fm2 <- lmer(Reaction ~ 1 + (Days | Subject), ss)
ml0 <- lmer(Reaction ~ Days + (1 | Subject), ss, REML = FALSE)
ml1 <- lmer(Reaction ~ Days + (Days | Subject), ss, REML = FALSE)
out$anova <- list(fm0_fm1 = tab(anova(fm0, fm1)), fm2_fm1 = tab(anova(fm2, fm1)),
                  ml0_ml1 = tab(anova(ml0, ml1)),
                  refit_false = tab(anova(fm0, fm1, refit = FALSE)))

fu <- lmer(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), ss)
nd <- data.frame(Days = c(0, 3, 9, 4, 5), Subject = factor(c("308", "309", "372", "999", "308")))
out$predict <- list(
  newdata = list(Days = nd$Days, Subject = as.character(nd$Subject)),
  all = unname(predict(fu, nd, allow.new.levels = TRUE)),
  none = unname(predict(fu, nd, re.form = NA)),
  intercept = unname(predict(fu, nd, re.form = ~(1 | Subject), allow.new.levels = TRUE)),
  slope = unname(predict(fu, nd, re.form = ~(0 + Days | Subject), allow.new.levels = TRUE)),
  fitted_none = unname(predict(fu, re.form = NA))[1:5])
fp <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), pen)
out$predict_penicillin <- list(plate = unname(predict(fp, re.form = ~(1 | plate)))[1:10],
                               sample = unname(predict(fp, re.form = ~(1 | sample)))[1:10])

fn <- lmer(y ~ x + (1 | a/b), toy)
rn <- ranef(fn)
out$nested <- list(groups = names(rn), theta_names = names(getME(fn, "theta")),
                   levels = rownames(rn[[1]]), modes = rn[[1]][, 1],
                   criterion = REMLcrit(fn))
cat(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "\n")
